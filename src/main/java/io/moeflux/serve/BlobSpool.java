package io.moeflux.serve;

import io.moeflux.connect.HeaderTooLargeException;
import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.connect.safetensors.FileWrites;
import io.moeflux.connect.safetensors.Placement;
import io.moeflux.connect.safetensors.SafetensorsFormat;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DenseTensor;
import io.moeflux.tensor.FileRegion;
import io.moeflux.tensor.RefCounted;
import io.moeflux.tensor.Releasable;
import io.moeflux.tensor.TensorInfo;
import io.netty.buffer.ByteBuf;
import io.netty.util.ReferenceCountUtil;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.Executor;
import java.util.function.Function;
import reactor.core.publisher.Flux;

/**
 * Turns an upload body, safetensors blobs back to back, into tensor events without holding tensor
 * bytes in memory.
 *
 * <p>Each blob's data section is written to a spool file of its own as it arrives. A tensor is emitted
 * as soon as its last byte is on file, as a slice of a read-only mapping (page cache, not anonymous
 * memory) that also names its place in the spool file, so a folder sink copies it file to file in the
 * kernel: on the development VM, 2.76 GB took 1.1 s that way ({@code cp}) and 2.3 to 2.9 s written
 * from a mapping. The file is unlinked as soon as it is opened, so its space returns to the file system
 * once the blob has ended and every tensor from it has been released, and nothing is left behind;
 * until then the blob holds one file descriptor. The next body chunk is taken only after the previous
 * one is on file and the tensors it completed have gone downstream, so a slow consumer stops socket
 * reads instead of growing a buffer.
 *
 * <p>The first blob's header may place tensors elsewhere ({@link Placements}): a tensor the conversion
 * passes on untouched is written straight into its place in the output, and an expert weight that
 * from-hf merges is handed to a {@link SlabWriter}, which writes its expert's slab of the merged tensor
 * in place once the slab's weights are all in; its event follows once the slab is on file. A grouped
 * expert tensor that to-hf splits goes to the {@link SlabWriter} expert slab by expert slab, and its
 * event follows once every slab's weights are on file.
 */
final class BlobSpool implements AutoCloseable {
    private final Settings settings;
    private final Function<List<TensorInfo>, Placements> firstHeader;
    private final UploadStatus status;

    private long bodyOffset;
    private int blobCount;
    private Blob blob;
    /** Writes merged expert slabs in place, when the first header's placements put any there. */
    private SlabWriter slabs;
    private boolean closed;

    private BlobSpool(Settings settings, Function<List<TensorInfo>, Placements> firstHeader, UploadStatus status) {
        this.settings = settings;
        this.firstHeader = firstHeader;
        this.status = status;
    }

    /**
     * The tensors of {@code body}, in arrival order. {@code body} hands over its buffers (retained
     * ones); each is released once on file, or when discarded on cancel or error.
     *
     * @param firstHeader told the first blob's tensors before any byte of them arrives; answers where
     *                    tensors may be written at once instead of spooled
     */
    static Flux<TensorEvent> decode(Flux<ByteBuf> body, Settings settings, Function<List<TensorInfo>, Placements> firstHeader,
            UploadStatus status) {
        return Stages.releaseOnDiscard(Flux.using(
                () -> new BlobSpool(settings, firstHeader, status),
                spool -> body.concatMapIterable(spool::accept, 1)
                        .concatWith(Flux.defer(() -> Flux.fromIterable(spool.finish())))
                        .doOnDiscard(ByteBuf.class, ReferenceCountUtil::safeRelease),
                BlobSpool::close));
    }

    /**
     * Spools one chunk and releases it; returns the tensors it completed. When it throws, the chunk is
     * left to the discard hook: concatMapIterable discards the element its mapper failed on.
     * Synchronized with {@link #close()}, which a cancellation runs on another thread.
     */
    private synchronized List<TensorEvent> accept(ByteBuf chunk) {
        if (closed) {
            chunk.release();
            return List.of();
        }
        List<TensorEvent> completed = new ArrayList<>();
        try {
            status.bytesReceived(chunk.readableBytes());
            while (chunk.isReadable()) {
                if (blob == null) {
                    if (settings.singleBlob() && blobCount == 1) {
                        throw new InvalidCheckpointException("single_blob is set, but a second blob starts at body byte "
                                + bodyOffset);
                    }
                    blob = new Blob(++blobCount, bodyOffset);
                }
                int before = chunk.readerIndex();
                blob.take(chunk, completed);
                bodyOffset += chunk.readerIndex() - before;
                if (blob.isComplete()) {
                    blob.finishWriting();
                    blob = null;
                }
            }
            if (slabs != null) {
                drainSlabs(completed);
            }
        } catch (IOException e) {
            completed.forEach(TensorEvent::release);
            throw new UncheckedIOException("cannot spool the upload to " + settings.spoolDir() + ": " + e.getMessage(), e);
        } catch (RuntimeException e) {
            completed.forEach(TensorEvent::release);
            throw e;
        }
        chunk.release();
        return completed;
    }

    /** Adds the tensors whose expert slabs are on file; a slab that could not be written fails the upload. */
    private void drainSlabs(List<TensorEvent> completed) {
        try {
            completed.addAll(slabs.drainWritten());
        } catch (IOException e) {
            throw new UncheckedIOException(e.getMessage(), e);
        }
    }

    /** Checks that the body ended on a blob boundary; waits for expert slabs still being written and returns their tensors. */
    private synchronized List<TensorEvent> finish() {
        if (blob != null) {
            throw new InvalidCheckpointException(blob.where + ": truncated: the body ends " + blob.received
                    + " bytes into the blob, " + (blob.header == null ? "inside its header"
                            : "short of its " + blob.header.totalSize() + " bytes"));
        }
        if (blobCount == 0) {
            throw new InvalidCheckpointException("empty body: expected one or more safetensors blobs");
        }
        if (slabs == null) {
            return List.of();
        }
        try {
            return slabs.finish();
        } catch (IOException e) {
            throw new UncheckedIOException(e.getMessage(), e);
        }
    }

    @Override
    public synchronized void close() {
        closed = true;
        if (blob != null) {
            blob.abandon();
            blob = null;
        }
        if (slabs != null) {
            slabs.close();
        }
    }

    /** One blob being received: its header, then its data section spooled to a file. */
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
        private int nextEntry;
        /** Per entry, where its bytes go instead of the spool file, or null. */
        private Placement[] placed;
        /** Per entry, the merged expert slab it is part of, or null. */
        private InPlaceLayout.SlabTarget[] slabTargets;
        /** Per slab part, the memory its bytes go to instead of the spool file until the part is whole, or null. */
        private SlabWriter.Staged[] staged;
        /** Per entry, the split it is cut by expert slab by expert slab as it arrives, or null. */
        private InPlaceLayout.SplitTarget[] splitTargets;
        /** The expert slab of a split entry being received, or null. */
        private SlabWriter.ExpertSlab expertSlab;
        /** The first entry whose staging has not been decided. */
        private int nextToStage;
        /** The entry the next data byte belongs to. */
        private int writeEntry;
        /** This blob's share of the header budget, from its length prefix to its end. */
        private Releasable headerHold = Releasable.NONE;

        Blob(int index, long bodyOffset) {
            this.where = "blob " + index + " (at body byte " + bodyOffset + ")";
        }

        boolean isComplete() {
            return header != null && received == header.totalSize();
        }

        void take(ByteBuf chunk, List<TensorEvent> completed) throws IOException {
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
                    placed = new Placement[header.entries().size()];
                    slabTargets = new InPlaceLayout.SlabTarget[placed.length];
                    staged = new SlabWriter.Staged[placed.length];
                    splitTargets = new InPlaceLayout.SplitTarget[placed.length];
                    if (blobCount == 1) {
                        Placements placements = firstHeader.apply(
                                header.entries().stream().map(SafetensorsFormat.Entry::info).toList());
                        for (int i = 0; i < placed.length; i++) {
                            String name = header.entries().get(i).name();
                            placed[i] = placements.of(name).orElse(null);
                            slabTargets[i] = placements.slab(name).orElse(null);
                            splitTargets[i] = placements.split(name).orElse(null);
                            if ((slabTargets[i] != null || splitTargets[i] != null) && slabs == null) {
                                slabs = new SlabWriter(settings.slabStagingBytes(), settings.slabWorkers());
                            }
                        }
                    }
                    openSpoolFile();
                    emitCompleted(completed);
                }
            } else {
                append(chunk, (int) Math.min(header.totalSize() - received, chunk.readableBytes()));
                emitCompleted(completed);
            }
        }

        /**
         * Refused before the header is allocated: the length prefix is the first thing a garbage body gets
         * wrong. The header's length is taken from the budget all uploads share until the blob ends.
         */
        private long checkedHeaderLength() {
            long n = SafetensorsFormat.headerLength(ByteBuffer.wrap(lengthPrefix.array()), -1, where);
            if (n > settings.maxHeaderBytes()) {
                throw new HeaderTooLargeException(where + ": header length " + n + " exceeds this service's limit of "
                        + settings.maxHeaderBytes() + " bytes");
            }
            headerHold = settings.headerBudget().reserve(n, where);
            return n;
        }

        /**
         * Opens the spool file and unlinks it at once: the channel and the mappings keep its data for as
         * long as they need it, and neither a failed upload nor a crashed process leaves a file behind.
         */
        private void openSpoolFile() throws IOException {
            Path file = Files.createTempFile(settings.spoolDir(), "upload-", ".data");
            try {
                channel = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE);
            } finally {
                Files.delete(file);
            }
            FileChannel opened = channel;
            channelUsers = RefCounted.onLastRelease(() -> closeQuietly(opened));
            channelHandle = channelUsers.retain();
        }

        /** Entries tile the data section (the header parser checks), so every byte belongs to exactly one. */
        private void append(ByteBuf chunk, int n) throws IOException {
            List<SafetensorsFormat.Entry> entries = header.entries();
            long at = received - header.dataStart();
            int from = chunk.readerIndex();
            int done = 0;
            while (done < n) {
                while (entries.get(writeEntry).end() <= at + done) {
                    writeEntry++;
                }
                stageUpTo(writeEntry);
                SafetensorsFormat.Entry e = entries.get(writeEntry);
                int m = (int) Math.min(n - done, e.end() - (at + done));
                Placement p = placed[writeEntry];
                SlabWriter.Staged memory = staged[writeEntry];
                InPlaceLayout.SplitTarget split = splitTargets[writeEntry];
                if (split != null) {
                    m = toExpertSlab(e, split, at + done - e.begin(), chunk, from + done, m);
                } else if (memory != null) {
                    memory.put(at + done - e.begin(), MemorySegment.ofBuffer(chunk.nioBuffer(from + done, m)), m);
                } else if (p == null) {
                    FileWrites.write(channel, chunk.nioBuffer(from + done, m), at + done);
                } else {
                    FileWrites.write(p.channel(), chunk.nioBuffer(from + done, m), p.offset() + (at + done - e.begin()),
                            p.writeLock());
                }
                done += m;
            }
            chunk.skipBytes(n);
            received += n;
        }

        /**
         * Puts bytes of a split entry into the expert slab they belong to, at most up to its end; hands
         * the slab over once whole. Returns how many bytes it took.
         */
        private int toExpertSlab(SafetensorsFormat.Entry e, InPlaceLayout.SplitTarget split, long inEntry, ByteBuf chunk,
                int index, int available) throws IOException {
            long slabBytes = split.slabBytes();
            long inSlab = inEntry % slabBytes;
            int m = (int) Math.min(available, slabBytes - inSlab);
            if (expertSlab == null) {
                expertSlab = slabs.stageExpert(e.name(), split, Math.toIntExact(inEntry / slabBytes));
            }
            expertSlab.put(inSlab, MemorySegment.ofBuffer(chunk.nioBuffer(index, m)), m);
            if (inSlab + m == slabBytes) {
                SlabWriter.ExpertSlab whole = expertSlab;
                expertSlab = null;
                slabs.addExpert(whole);
            }
            return m;
        }

        /**
         * Decides, as each slab part's first byte arrives, whether it waits for its partners in memory
         * or in the spool file; may wait for a slab being written to free memory.
         */
        private void stageUpTo(int entry) throws IOException {
            for (; nextToStage <= entry; nextToStage++) {
                if (slabTargets[nextToStage] != null) {
                    staged[nextToStage] = slabs.stage(header.entries().get(nextToStage).info(), slabTargets[nextToStage].part())
                            .orElse(null);
                }
            }
        }

        /** Hands out the tensors whose bytes are all on file, sliced from one mapping. */
        private void emitCompleted(List<TensorEvent> completed) throws IOException {
            List<SafetensorsFormat.Entry> entries = header.entries();
            long onFile = received - header.dataStart();
            int first = nextEntry;
            while (nextEntry < entries.size() && entries.get(nextEntry).end() <= onFile) {
                nextEntry++;
            }
            for (int i = first; i < nextEntry; ) {
                SafetensorsFormat.Entry e = entries.get(i);
                if (placed[i] != null) {
                    completed.add(new TensorEvent(e.name(), InPlaceLayout.regionTensor(e.dtype(), e.shape(), placed[i])));
                    status.tensorReceived();
                    i++;
                    continue;
                }
                if (splitTargets[i] != null) {
                    status.tensorReceived();
                    i++;
                    continue;
                }
                if (staged[i] != null) {
                    SlabWriter.Staged memory = staged[i];
                    staged[i] = null;
                    status.tensorReceived();
                    slabs.add(e.name(), memory.toTensor(), slabTargets[i].part(), slabTargets[i].merged());
                    i++;
                    continue;
                }
                int end = i;
                while (end < nextEntry && placed[end] == null && staged[end] == null && splitTargets[end] == null) {
                    end++;
                }
                emitSpooled(entries, i, end, completed);
                i = end;
            }
        }

        /** Entries {@code [first, end)}, all spooled, sliced from one mapping. */
        private void emitSpooled(List<SafetensorsFormat.Entry> entries, int first, int end, List<TensorEvent> completed)
                throws IOException {
            long regionBegin = entries.get(first).begin();
            Region region = map(regionBegin, entries.get(end - 1).end() - regionBegin);
            try {
                for (int i = first; i < end; i++) {
                    SafetensorsFormat.Entry e = entries.get(i);
                    MemorySegment bytes = region.segment.asSlice(e.begin() - regionBegin, e.byteSize());
                    Releasable mapping = region.tensors.retain();
                    Releasable file = channelUsers.retain();
                    Releasable both = () -> {
                        mapping.release();
                        file.release();
                    };
                    DenseTensor tensor = new DenseTensor(e.dtype(), e.shape(), bytes, both,
                            new FileRegion(channel, e.begin(), e.byteSize()));
                    status.tensorReceived();
                    if (slabTargets[i] != null) {
                        slabs.add(e.name(), tensor, slabTargets[i].part(), slabTargets[i].merged());
                    } else {
                        completed.add(new TensorEvent(e.name(), tensor));
                    }
                }
            } finally {
                region.handle.release();
            }
        }

        private Region map(long begin, long length) throws IOException {
            if (length == 0) {
                return new Region(MemorySegment.ofArray(new byte[0]), RefCounted.onLastRelease(() -> {}));
            }
            Arena arena = Arena.ofShared();
            try {
                MemorySegment segment = channel.map(FileChannel.MapMode.READ_ONLY, begin, length, arena);
                return new Region(segment, RefCounted.onLastRelease(arena::close));
            } catch (IOException | RuntimeException e) {
                arena.close();
                throw e;
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
            if (expertSlab != null) {
                expertSlab.discard();
                expertSlab = null;
            }
            if (staged != null) {
                for (SlabWriter.Staged memory : staged) {
                    if (memory != null) {
                        memory.discard();
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

    /** Where the first blob's tensors may go instead of the spool, by their uploaded names. */
    @FunctionalInterface
    interface Placements {
        Placements NONE = name -> Optional.empty();

        /** Where a tensor the conversion passes on untouched goes. */
        Optional<Placement> of(String uploadedName);

        /** The merged expert slab a weight goes into, transposed. */
        default Optional<InPlaceLayout.SlabTarget> slab(String uploadedName) {
            return Optional.empty();
        }

        /** The split a grouped expert tensor is cut by, expert slab by expert slab. */
        default Optional<InPlaceLayout.SplitTarget> split(String uploadedName) {
            return Optional.empty();
        }
    }

    /**
     * How bodies are taken apart.
     *
     * @param spoolDir         where blobs' data sections are spooled
     * @param maxHeaderBytes   the largest header accepted, refused before it is allocated
     * @param singleBlob       refuse a body with more than one blob
     * @param slabStagingBytes memory per upload for expert weights written in place: they wait there for
     *                         their slab's other weights and for the slab's write ({@link SlabWriter})
     * @param slabWorkers      where expert slabs are transposed and written; its threads bound how many
     *                         are written at once across uploads
     * @param headerBudget     what the headers of all running uploads may take together
     */
    record Settings(Path spoolDir, long maxHeaderBytes, boolean singleBlob, long slabStagingBytes, Executor slabWorkers,
                    HeaderBudget headerBudget) {}

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
