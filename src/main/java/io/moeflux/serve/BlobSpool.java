package io.moeflux.serve;

import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DenseTensor;
import io.moeflux.tensor.RefCounted;
import io.moeflux.tensor.Releasable;
import io.netty.buffer.ByteBuf;
import io.netty.util.ReferenceCountUtil;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Turns an upload body, safetensors blobs back to back, into tensor events without holding blob bytes
 * in memory.
 *
 * <p>Each blob is written to a spool file of its own as its bytes arrive. A tensor is emitted as soon as
 * its last byte is on file, as a slice of a read-only mapping (page cache, not anonymous memory); the
 * file is deleted once the blob has ended and every tensor mapped from it has been released. The next
 * body chunk is requested only after the previous one is on file and the tensors it completed have been
 * taken downstream, so a slow consumer stops socket reads instead of growing a buffer.
 */
final class BlobSpool implements AutoCloseable {
    /** The safetensors format's own cap on the header length. */
    static final long FORMAT_MAX_HEADER_BYTES = 100_000_000L;

    private final Path spoolDir;
    private final long maxHeaderBytes;
    private final UploadStatus status;
    private final ByteBuffer lengthPrefix = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);

    private long bodyOffset;
    private int blobCount;
    private Blob blob;

    private BlobSpool(Path spoolDir, long maxHeaderBytes, UploadStatus status) {
        this.spoolDir = spoolDir;
        this.maxHeaderBytes = Math.min(maxHeaderBytes, FORMAT_MAX_HEADER_BYTES);
        this.status = status;
    }

    /**
     * The tensors of {@code body}, in arrival order. {@code body} must hand over ownership of its buffers
     * (retained buffers); each is released once on file, or discarded on cancel.
     */
    static Flux<TensorEvent> decode(Flux<ByteBuf> body, Path spoolDir, long maxHeaderBytes, UploadStatus status) {
        return Stages.releaseOnDiscard(Flux.using(
                () -> new BlobSpool(spoolDir, maxHeaderBytes, status),
                spool -> body.concatMapIterable(spool::accept, 1)
                        .concatWith(Mono.fromRunnable(spool::finish))
                        .doOnDiscard(ByteBuf.class, ReferenceCountUtil::safeRelease),
                BlobSpool::close));
    }

    /** Spools one chunk; returns the tensors it completed. Releases the chunk. */
    private List<TensorEvent> accept(ByteBuf chunk) {
        List<TensorEvent> completed = new ArrayList<>();
        try {
            status.bytesReceived(chunk.readableBytes());
            while (chunk.isReadable()) {
                if (blob == null) {
                    blob = new Blob(spoolDir, ++blobCount, bodyOffset);
                }
                int before = chunk.readerIndex();
                blob.take(chunk, completed);
                bodyOffset += chunk.readerIndex() - before;
                if (blob.isComplete()) {
                    blob.finishWriting();
                    blob = null;
                }
            }
            return completed;
        } catch (IOException e) {
            completed.forEach(TensorEvent::release);
            throw new UncheckedIOException("cannot spool the upload to " + spoolDir, e);
        } catch (RuntimeException e) {
            completed.forEach(TensorEvent::release);
            throw e;
        } finally {
            chunk.release();
        }
    }

    private void finish() {
        if (blob != null) {
            throw new MalformedUploadException(blob.where() + ": truncated: the body ended " + blob.written
                    + " bytes into the blob, " + (blob.header == null ? "before the end of its header"
                            : "short of its " + (blob.header.dataStart() + blob.header.dataLength()) + " bytes"));
        }
        if (blobCount == 0) {
            throw new MalformedUploadException("empty body: expected one or more safetensors blobs");
        }
    }

    @Override
    public void close() {
        if (blob != null) {
            blob.abandon();
            blob = null;
        }
    }

    /** One blob being spooled: its file, how much of it has arrived, and which tensors are out. */
    private final class Blob {
        private final Path file;
        private final FileChannel channel;
        private final String where;
        /** Deletes the file when the spool and every mapping from the blob have let go. */
        private final RefCounted users;
        private final Releasable spoolHandle;
        private long written;
        private BlobHeader header;
        private int nextEntry;

        Blob(Path dir, int index, long bodyOffset) throws IOException {
            this.where = "blob " + index + " (body offset " + bodyOffset + ")";
            this.file = Files.createTempFile(dir, "upload-", ".safetensors");
            try {
                this.channel = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE);
            } catch (IOException e) {
                Files.deleteIfExists(file);
                throw e;
            }
            this.users = RefCounted.onLastRelease(this::deleteFile);
            this.spoolHandle = users.retain();
            lengthPrefix.clear();
        }

        String where() {
            return where;
        }

        boolean isComplete() {
            return header != null && written == header.dataStart() + header.dataLength();
        }

        void take(ByteBuf chunk, List<TensorEvent> completed) throws IOException {
            if (written < 8) {
                int n = Math.min(8 - (int) written, chunk.readableBytes());
                chunk.getBytes(chunk.readerIndex(), lengthPrefix.array(), (int) written, n);
                append(chunk, n);
                if (written == 8) {
                    checkHeaderLength(lengthPrefix.getLong(0));
                }
            } else if (header == null) {
                long headerEnd = 8 + lengthPrefix.getLong(0);
                append(chunk, (int) Math.min(headerEnd - written, chunk.readableBytes()));
                if (written == headerEnd) {
                    readHeader(headerEnd);
                    emitCompleted(completed);
                }
            } else {
                long end = header.dataStart() + header.dataLength();
                append(chunk, (int) Math.min(end - written, chunk.readableBytes()));
                emitCompleted(completed);
            }
        }

        private void checkHeaderLength(long length) {
            if (length < 2 || length > maxHeaderBytes) {
                // Refused before anything is allocated for it: the prefix is the first thing a garbage body gets wrong.
                throw new MalformedUploadException(where + ": header length " + Long.toUnsignedString(length)
                        + " is outside [2, " + maxHeaderBytes + "] (is this a safetensors blob?)");
            }
        }

        private void readHeader(long headerEnd) throws IOException {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment mapped = channel.map(FileChannel.MapMode.READ_ONLY, 0, headerEnd, arena);
                header = BlobHeader.parse(mapped, headerEnd - 8, where);
            }
        }

        private void append(ByteBuf chunk, int n) throws IOException {
            int from = chunk.readerIndex();
            int done = 0;
            while (done < n) {
                done += chunk.getBytes(from + done, channel, written + done, n - done);
            }
            chunk.skipBytes(n);
            written += n;
        }

        /** Maps the tensors whose bytes are all on file with one mapping, and hands them out. */
        private void emitCompleted(List<TensorEvent> completed) throws IOException {
            List<BlobHeader.Entry> entries = header.entries();
            int first = nextEntry;
            while (nextEntry < entries.size() && header.dataStart() + entries.get(nextEntry).end() <= written) {
                nextEntry++;
            }
            if (first == nextEntry) {
                return;
            }
            long regionBegin = entries.get(first).begin();
            long regionEnd = entries.get(nextEntry - 1).end();
            Region region = map(regionBegin, regionEnd - regionBegin);
            try {
                for (int i = first; i < nextEntry; i++) {
                    BlobHeader.Entry e = entries.get(i);
                    MemorySegment bytes = region.segment.asSlice(e.begin() - regionBegin, e.end() - e.begin());
                    completed.add(new TensorEvent(e.info().name(),
                            new DenseTensor(e.info().dtype(), e.info().shape(), bytes, region.tensors.retain())));
                    status.tensorReceived();
                }
            } finally {
                region.handle.release();
            }
        }

        private Region map(long begin, long length) throws IOException {
            if (length == 0) {
                return new Region(MemorySegment.ofArray(new byte[0]), RefCounted.onLastRelease(() -> {}));
            }
            Releasable blobUse = users.retain();
            Arena arena = Arena.ofShared();
            try {
                MemorySegment segment = channel.map(FileChannel.MapMode.READ_ONLY, header.dataStart() + begin, length, arena);
                return new Region(segment, RefCounted.onLastRelease(() -> {
                    arena.close();
                    blobUse.release();
                }));
            } catch (IOException | RuntimeException e) {
                arena.close();
                blobUse.release();
                throw e;
            }
        }

        void finishWriting() throws IOException {
            channel.close();
            spoolHandle.release();
        }

        void abandon() {
            try {
                channel.close();
            } catch (IOException e) {
                // Nothing more can go wrong with a spool file that is about to be deleted.
            }
            spoolHandle.release();
        }

        private void deleteFile() {
            try {
                Files.deleteIfExists(file);
            } catch (IOException e) {
                // Runs inside a tensor's release on any thread, where throwing would break the pipeline's
                // cleanup; a leftover file in the spool folder is the lesser harm.
            }
        }
    }

    /** A read-only mapping shared by the tensors sliced from it; unmapped when the last one is released. */
    private static final class Region {
        final MemorySegment segment;
        final RefCounted tensors;
        /** The spool's own handle, held while the tensors take theirs, so the mapping cannot close early. */
        final Releasable handle;

        Region(MemorySegment segment, RefCounted tensors) {
            this.segment = segment;
            this.tensors = tensors;
            this.handle = tensors.retain();
        }
    }
}
