package io.moeflux.connect.http;

import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.connect.safetensors.FileWrites;
import io.moeflux.connect.safetensors.SafetensorsFormat;
import io.moeflux.connect.safetensors.ShardedSave;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DenseTensor;
import io.moeflux.tensor.FileRegion;
import io.moeflux.tensor.RefCounted;
import io.moeflux.tensor.ColumnBlockedTensor;
import io.moeflux.tensor.Releasable;
import io.moeflux.tensor.Tensor;
import io.moeflux.tensor.TensorInfo;
import io.moeflux.tensor.TransposedRead;
import io.netty.buffer.ByteBuf;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Consumer;
import java.util.function.Predicate;

/**
 * Takes an upload body, safetensors blobs back to back, apart into tensor events without holding tensor
 * bytes in memory. Called by one thread at a time; {@link #close()} may come from a cancelling one.
 *
 * <p>A tensor the consumer asked to have {@linkplain #streamed streamed} goes out as a
 * {@link StreamingTensor} when its first byte arrives, and its bytes follow as they come: the sink writes
 * them into their place straight from the socket's buffers. Every other tensor's bytes are written to a
 * spool file of its blob as they arrive, and the tensor goes out once its last byte is on file, as a slice
 * of a read-only mapping (page cache, not anonymous memory) that also names its place in the spool file,
 * so a folder sink copies it file to file in the kernel. For a consumer that takes pieces, a tensor of
 * {@value #ROW_PIECES_FROM} bytes or more goes out in pieces of whole rows of its first dimension (at least {@value #MIN_PIECE_BYTES} bytes
 * each) as they land, so nothing downstream waits for all of a grouped expert tensor. A spool file is
 * unlinked as soon as it is opened: its space returns once the blob has ended and every tensor from it has
 * been released, and nothing is left behind.
 */
final class BlobDecoder implements AutoCloseable {
    static final long ROW_PIECES_FROM = 64L << 20;
    static final long MIN_PIECE_BYTES = 16L << 20;

    private final UploadSourceOptions options;
    private final StagingMemory staging;
    private Predicate<String> streamed = name -> false;
    private boolean rowPieces;
    private Map<String, TransposedRead> transposed = Map.of();
    /** The declared checkpoint's tensors by name, when blobs hold pieces of them; null otherwise. */
    private Map<String, TensorInfo> declared;
    private Optional<List<TensorInfo>> firstHeader = Optional.empty();

    private long bodyOffset;
    private int blobCount;
    private Blob blob;
    private boolean closed;

    BlobDecoder(UploadSourceOptions options) {
        this.options = options;
        this.staging = new StagingMemory(options.stagingBytes());
    }

    /** How the consumer takes the tensors (see {@link UploadSource.Delivery}); set before data arrives. */
    synchronized void deliver(UploadSource.Delivery delivery) {
        this.streamed = delivery.streamed();
        this.rowPieces = delivery.rowPieces();
        this.transposed = delivery.transposed();
        this.declared = delivery.declared().map(tensors -> {
            Map<String, TensorInfo> byName = new HashMap<>();
            tensors.forEach(t -> byName.put(t.name(), t));
            return byName;
        }).orElse(null);
    }

    /**
     * What {@link #accept} did with a chunk: {@code drained} completes once the parts it handed to streaming
     * tensors are written; {@code resume}, when not null, says it stopped at a tensor that waits for
     * staging memory: the chunk, not released, is to be given again once it completes.
     */
    record Taken(CompletableFuture<Void> drained, CompletableFuture<Void> resume) {}

    /** The first blob's tensors, once its header is read. */
    synchronized Optional<List<TensorInfo>> firstHeader() {
        return firstHeader;
    }

    /**
     * Takes what it can of {@code chunk}; each tensor it completes (or starts, when streamed) goes to
     * {@code emit}. Returns when done with the chunk, which it then released unless it waits for staging
     * memory (see {@link Taken}), or with {@code null} when {@code emit} is null and the first blob's header
     * has just been read: the rest of the chunk waits, retained, for a consumer.
     */
    synchronized Taken accept(ByteBuf chunk, Consumer<TensorEvent> emit) {
        Handoffs handoffs = new Handoffs();
        if (closed) {
            chunk.release();
            return new Taken(handoffs.done(), null);
        }
        try {
            while (true) {
                if (blob == null) {
                    if (!chunk.isReadable()) {
                        break;
                    }
                    if (options.singleBlob() && blobCount == 1) {
                        throw new InvalidCheckpointException("single_blob is set, but a second blob starts at body byte "
                                + bodyOffset);
                    }
                    blob = new Blob(++blobCount, bodyOffset);
                }
                if (blob.header != null) {
                    if (emit == null) {
                        return null;
                    }
                    blob.startData(emit);
                    if (blob.isComplete()) {
                        blob.finishWriting();
                        blob = null;
                        continue;
                    }
                }
                if (!chunk.isReadable()) {
                    break;
                }
                int before = chunk.readerIndex();
                CompletableFuture<Void> memory = blob.take(chunk, emit, handoffs);
                bodyOffset += chunk.readerIndex() - before;
                if (memory != null) {
                    return new Taken(handoffs.done(), memory);
                }
            }
        } catch (IOException e) {
            chunk.release();
            throw new UncheckedIOException("cannot spool the upload to " + options.spoolDir() + ": " + e.getMessage(), e);
        } catch (RuntimeException e) {
            chunk.release();
            throw e;
        }
        chunk.release();
        return new Taken(handoffs.done(), null);
    }

    /** Checks that the body ended on a blob boundary. */
    synchronized void finish() {
        if (blob != null) {
            throw new InvalidCheckpointException(blob.where + ": truncated: the body ends " + blob.received
                    + " bytes into the blob, " + (blob.header == null ? "inside its header"
                            : "short of its " + blob.header.totalSize() + " bytes"));
        }
        if (blobCount == 0) {
            throw new InvalidCheckpointException("empty body: expected one or more safetensors blobs");
        }
    }

    /** Ends the body early: a tensor still streaming fails its writer, spool files go once their tensors do. */
    @Override
    public synchronized void close() {
        closed = true;
        if (blob != null) {
            blob.abandon();
            blob = null;
        }
        staging.close();
    }

    /** Parts of one chunk handed to streaming tensors, and when all of them are written. */
    private static final class Handoffs {
        private final AtomicInteger outstanding = new AtomicInteger(1);
        private final CompletableFuture<Void> drained = new CompletableFuture<>();

        Runnable add() {
            outstanding.incrementAndGet();
            AtomicInteger once = new AtomicInteger();
            return () -> {
                if (once.getAndIncrement() == 0) {
                    arrive();
                }
            };
        }

        private void arrive() {
            if (outstanding.decrementAndGet() == 0) {
                drained.complete(null);
            }
        }

        CompletableFuture<Void> done() {
            arrive();
            return drained;
        }
    }

    /** One blob being received: its header, then its data section spooled, streamed or cut. */
    private final class Blob {
        final String where;
        private final ByteBuffer lengthPrefix = ByteBuffer.allocate(8);
        private byte[] headerJson;
        SafetensorsFormat.Header header;
        /** Bytes of the blob received so far, length prefix and header included. */
        long received;
        private FileChannel channel;
        /** The blob's handle on the spool channel; each tensor takes another, for its {@link FileRegion}. */
        private Releasable channelHandle;
        private RefCounted channelUsers;
        /** Per entry, whether it streams. */
        private boolean[] streams;
        /** Per entry, the column-blocked memory it is received into instead of the spool, or null. */
        private ColumnBlockedTensor[] held;
        /** Per entry, whether where its bytes go has been decided (at its first byte). */
        private boolean[] placed;
        /** The streaming tensor being received, or null. */
        private StreamingTensor streaming;
        /** The entry the next data byte belongs to. */
        private int writeEntry;
        /** The first entry not yet emitted whole or to its end. */
        private int nextEntry;
        /** Rows of {@link #nextEntry}'s first dimension already emitted as pieces. */
        private long rowsEmitted;
        /** This blob's share of the header allowance, from its length prefix to its end. */
        private Releasable headerHold = Releasable.NONE;
        /** Per tensor, where it starts in its declared whole tensor; null when the checkpoint is not declared. */
        private Map<String, long[]> pieceOffsets;

        Blob(int index, long bodyOffset) {
            this.where = "blob " + index + " (at body byte " + bodyOffset + ")";
        }

        boolean isComplete() {
            return header != null && received == header.totalSize();
        }

        /** Takes bytes of the chunk; returns where to wait when a tensor's first byte must wait for staging memory. */
        CompletableFuture<Void> take(ByteBuf chunk, Consumer<TensorEvent> emit, Handoffs handoffs) throws IOException {
            if (lengthPrefix.hasRemaining()) {
                int n = Math.min(lengthPrefix.remaining(), chunk.readableBytes());
                chunk.readBytes(lengthPrefix.array(), lengthPrefix.position(), n);
                lengthPrefix.position(lengthPrefix.position() + n);
                received += n;
                if (!lengthPrefix.hasRemaining()) {
                    headerJson = new byte[Math.toIntExact(checkedHeaderLength())];
                }
            } else if (header == null) {
                int at = (int) (received - 8);
                int n = Math.min(headerJson.length - at, chunk.readableBytes());
                chunk.readBytes(headerJson, at, n);
                received += n;
                if (at + n == headerJson.length) {
                    header = SafetensorsFormat.parseHeader(headerJson, -1, where);
                    headerJson = null;
                    if (blobCount == 1) {
                        firstHeader = Optional.of(header.entries().stream().map(SafetensorsFormat.Entry::info).toList());
                    }
                    openSpoolFile();
                }
            } else {
                CompletableFuture<Void> wait = append(chunk, (int) Math.min(header.totalSize() - received, chunk.readableBytes()),
                        emit, handoffs);
                emitCompleted(emit);
                return wait;
            }
            return null;
        }

        /**
         * Once the header is read and a consumer is there: decides which entries stream, and hands out
         * those complete before any data byte (empty tensors). Runs once per blob.
         */
        void startData(Consumer<TensorEvent> emit) throws IOException {
            if (streams != null) {
                return;
            }
            if (declared != null) {
                pieceOffsets = ShardedSave.placesIn(header, where, declared);
            } else if (ShardedSave.isShard(header)) {
                // Taken as whole tensors, its pieces would be stored as tensors of their pieces' shapes.
                throw new InvalidCheckpointException(where + ": holds pieces of tensors (DCP_SHARDING_INFO): a rank's file of a"
                        + " sharded save goes up as one part of a checkpoint in parts, not as a checkpoint of its own");
            }
            streams = new boolean[header.entries().size()];
            held = new ColumnBlockedTensor[streams.length];
            placed = new boolean[streams.length];
            for (int i = 0; i < streams.length; i++) {
                SafetensorsFormat.Entry e = header.entries().get(i);
                streams[i] = e.byteSize() > 0 && streamed.test(e.name());
            }
            emitCompleted(emit);
        }

        /** The header's length, taken from the allowance all uploads share until the blob ends. */
        private long checkedHeaderLength() {
            long n = SafetensorsFormat.headerLength(ByteBuffer.wrap(lengthPrefix.array()), -1, where);
            headerHold = options.reserveHeader(n, where);
            return n;
        }

        /**
         * Opens the spool file and unlinks it at once: the channel and the mappings keep its data for as
         * long as they need it, and neither a failed upload nor a crashed process leaves a file behind.
         */
        private void openSpoolFile() throws IOException {
            Path file = Files.createTempFile(options.spoolDir(), "upload-", ".data");
            try {
                channel = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE);
            } finally {
                Files.delete(file);
            }
            FileChannel opened = channel;
            channelUsers = RefCounted.onLastRelease(() -> closeQuietly(opened));
            channelHandle = channelUsers.retain();
        }

        /**
         * Entries tile the data section (the header parser checks), so every byte belongs to exactly one.
         * Stops at the first byte of a tensor that waits for staging memory, and returns where to wait.
         */
        private CompletableFuture<Void> append(ByteBuf chunk, int n, Consumer<TensorEvent> emit, Handoffs handoffs)
                throws IOException {
            List<SafetensorsFormat.Entry> entries = header.entries();
            long at = received - header.dataStart();
            int from = chunk.readerIndex();
            int done = 0;
            CompletableFuture<Void> wait = null;
            while (done < n) {
                while (entries.get(writeEntry).end() <= at + done) {
                    writeEntry++;
                }
                SafetensorsFormat.Entry e = entries.get(writeEntry);
                if (!placed[writeEntry]) {
                    wait = place(writeEntry, e);
                    if (wait != null) {
                        break;
                    }
                }
                int m = (int) Math.min(n - done, e.end() - (at + done));
                if (streams[writeEntry]) {
                    if (at + done == e.begin()) {
                        streaming = new StreamingTensor(e.name(), e.dtype(), e.shape());
                        emit.accept(event(e, streaming, 0));
                        options.listener().tensorReceived();
                    }
                    streaming.offer(chunk.retainedSlice(from + done, m), handoffs.add());
                    if (at + done + m == e.end()) {
                        streaming = null;
                    }
                } else if (held[writeEntry] != null) {
                    held[writeEntry].putRowMajor(at + done - e.begin(), MemorySegment.ofBuffer(chunk.nioBuffer(from + done, m)), 0, m);
                } else {
                    FileWrites.write(channel, chunk.nioBuffer(from + done, m), at + done);
                    options.listener().bytesSpooled(m);
                }
                TransposedRead read = transposed.get(e.name());
                if (read != null && !streams[writeEntry] && at + done + m == e.end()) {
                    // Counted as soon as its last byte is in, before the next tensor's first byte asks for memory.
                    staging.weightIn(read.slab());
                }
                done += m;
            }
            chunk.skipBytes(done);
            received += done;
            return wait;
        }

        /**
         * Decides at a tensor's first byte where its bytes go: streamed, held column-blocked in staging memory
         * (a tensor the consumer reads transposed, while there is memory), or spooled. Returns where to wait
         * when staging memory is used up by slabs that will free it.
         */
        private CompletableFuture<Void> place(int i, SafetensorsFormat.Entry e) {
            TransposedRead read = streams[i] ? null : transposed.get(e.name());
            if (read != null && e.shape().length == 2 && e.byteSize() > 0) {
                StagingMemory.Grant grant = staging.take(e.byteSize(), read.slab(), read.partsPerSlab());
                if (grant.freed() != null) {
                    return grant.freed();
                }
                if (grant.buffer() != null) {
                    StagingMemory.Buffer buffer = grant.buffer();
                    long[] shape = e.shape();
                    held[i] = new ColumnBlockedTensor(e.dtype(), Math.toIntExact(shape[0]), Math.toIntExact(shape[1]),
                            read.blockCols(), buffer.segment.asSlice(0, e.byteSize()), () -> staging.giveBack(buffer));
                }
            }
            placed[i] = true;
            return null;
        }

        /** Hands out what is on file: whole tensors, and pieces of whole rows of large ones. */
        private void emitCompleted(Consumer<TensorEvent> emit) throws IOException {
            List<SafetensorsFormat.Entry> entries = header.entries();
            long onFile = received - header.dataStart();
            while (nextEntry < entries.size()) {
                SafetensorsFormat.Entry e = entries.get(nextEntry);
                boolean whole = e.end() <= onFile;
                if (streams[nextEntry]) {
                    if (!whole) {
                        return;
                    }
                } else if (whole && held[nextEntry] != null) {
                    emit.accept(event(e, held[nextEntry], 0));
                    held[nextEntry] = null;
                    options.listener().tensorReceived();
                } else if (held[nextEntry] != null) {
                    return;
                } else if (whole) {
                    emitRows(e, rowsEmitted, rowsOf(e), emit);
                    options.listener().tensorReceived();
                } else {
                    long rowBytes = rowBytes(e);
                    if (!rowPieces || e.byteSize() < ROW_PIECES_FROM || rowBytes == 0) {
                        return;
                    }
                    long rows = Math.max(0, onFile - e.begin()) / rowBytes;
                    if ((rows - rowsEmitted) * rowBytes < MIN_PIECE_BYTES) {
                        return;
                    }
                    emitRows(e, rowsEmitted, rows, emit);
                    rowsEmitted = rows;
                    return;
                }
                nextEntry++;
                rowsEmitted = 0;
            }
        }

        private long rowsOf(SafetensorsFormat.Entry e) {
            long[] shape = e.shape();
            return shape.length == 0 ? 1 : shape[0];
        }

        /** Bytes of one index of the first dimension: the unit of a row piece. */
        private long rowBytes(SafetensorsFormat.Entry e) {
            long[] shape = e.shape();
            return shape.length == 0 || shape[0] == 0 ? 0 : e.byteSize() / shape[0];
        }

        /**
         * Rows {@code [first, end)} of the entry's first dimension, sliced from a mapping of their bytes:
         * the whole tensor when they are all of it.
         */
        private void emitRows(SafetensorsFormat.Entry e, long first, long end, Consumer<TensorEvent> emit) throws IOException {
            long[] whole = e.shape();
            boolean all = first == 0 && end == rowsOf(e);
            long rowBytes = whole.length == 0 ? e.byteSize() : rowBytes(e);
            long begin = e.begin() + first * rowBytes;
            long length = all ? e.byteSize() : (end - first) * rowBytes;
            long[] shape = whole.clone();
            if (!all) {
                shape[0] = end - first;
            }
            emit.accept(event(e, mapped(begin, length, e, shape), first));
        }

        /**
         * The event of {@code tensor}, the entry's rows from {@code firstRow} on: when the checkpoint is declared,
         * a piece of the declared tensor, placed by the blob's offsets.
         */
        private TensorEvent event(SafetensorsFormat.Entry e, Tensor tensor, long firstRow) {
            long[] offsets = pieceOffsets == null ? new long[e.shape().length] : pieceOffsets.get(e.name()).clone();
            if (offsets.length > 0) {
                offsets[0] += firstRow;
            }
            long[] whole = pieceOffsets == null ? e.shape() : declared.get(e.name()).shape();
            return TensorEvent.piece(e.name(), whole, offsets, tensor);
        }

        /** Bytes {@code [begin, begin + length)} of the spool file, read-only, holding the file open until released. */
        private DenseTensor mapped(long begin, long length, SafetensorsFormat.Entry e, long[] shape) throws IOException {
            Releasable file = channelUsers.retain();
            if (length == 0) {
                return new DenseTensor(e.dtype(), shape, MemorySegment.ofArray(new byte[0]), file, new FileRegion(channel, begin, 0));
            }
            Arena arena = Arena.ofShared();
            try {
                MemorySegment bytes = channel.map(FileChannel.MapMode.READ_ONLY, begin, length, arena);
                return new DenseTensor(e.dtype(), shape, bytes, () -> {
                    arena.close();
                    file.release();
                }, new FileRegion(channel, begin, length));
            } catch (IOException | RuntimeException ex) {
                arena.close();
                file.release();
                throw ex;
            }
        }

        /** The channel closes once the last byte is on file and no tensor still names a region of it. */
        void finishWriting() {
            channelHandle.release();
            headerHold.release();
        }

        void abandon() {
            headerHold.release();
            if (channelHandle != null) {
                channelHandle.release();
            }
            if (streaming != null) {
                streaming.fail(new IOException(where + ": the body ended inside this tensor"));
                streaming = null;
            }
            if (held != null) {
                for (int i = nextEntry; i < held.length; i++) {
                    if (held[i] != null) {
                        held[i].release();
                        held[i] = null;
                    }
                }
            }
        }
    }

    private static void closeQuietly(FileChannel channel) {
        try {
            channel.close();
        } catch (IOException e) {
            // The file is unlinked already; closing is only about the descriptor, and it is gone either way.
        }
    }
}
