package io.moeflux.serve;

import io.moeflux.connect.safetensors.FileWrites;
import io.moeflux.connect.safetensors.Placement;
import io.moeflux.hy3.MergedPart;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.ByteSink;
import io.moeflux.tensor.ColumnBlockedTensor;
import io.moeflux.tensor.StackedTransposeTensor;
import io.moeflux.tensor.Tensor;
import io.moeflux.tensor.TensorInfo;
import io.moeflux.tensor.Tensors;
import java.io.IOException;
import java.io.InterruptedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.Executor;

/**
 * Writes from-hf's merged expert tensors of an upload laid out in advance slab by slab, straight into
 * their place in the output: an expert's weights are held only until the last of them arrives, then
 * transposed into that expert's slab on a worker thread while the socket is read on.
 *
 * <p>Without it, a merged tensor can only be written once its layer's merge window closes, so every
 * expert weight of the layer is spooled first (on the development VM that made a from-hf upload 4.5
 * times as long as {@code cp}, against 2.3 for the same upload without conversion).
 *
 * <p>Weights wait in staging memory of at most {@code stagingBytes}, reused from slab to slab. When it is
 * used up while slabs are being written, the receiver waits for one to finish, which stops socket reads
 * (backpressure); when it is used up by weights still waiting for their partners (an upload ordered
 * all gates, then all ups), further weights are spooled instead and join their slabs from the spool.
 *
 * <p>It also writes to-hf's split the other way round: each expert's slab of a grouped tensor is held
 * until its last byte arrives, then its per-expert weights are transposed out of it into their places,
 * so the grouped tensor (4.8 GB per Hy3 layer) is never spooled.
 */
final class SlabWriter implements AutoCloseable {
    private final long stagingBytes;
    private final Executor workers;
    private final ConcurrentLinkedQueue<TensorEvent> written = new ConcurrentLinkedQueue<>();
    private final Map<SlabKey, Pending> pending = new HashMap<>();
    /** Per grouped tensor that to-hf splits, how many of its expert slabs are on file. */
    private final Map<String, Integer> splitSlabsWritten = new HashMap<>();
    /** Staging buffers not in use, kept for the next weights: fresh ones cost a zero fill and page faults. */
    private final ArrayDeque<Buffer> idle = new ArrayDeque<>();
    /** Bytes of every live buffer, idle or in use. */
    private long stagingAllocated;
    private int slabsInFlight;
    private IOException failure;
    private boolean closed;

    SlabWriter(long stagingBytes, Executor workers) {
        this.stagingBytes = stagingBytes;
        this.workers = workers;
    }

    /**
     * Memory for one weight, or empty when it must be spooled: staging is used up by weights that wait
     * for their partners. Waits while slabs being written hold the memory.
     */
    synchronized Optional<Staged> stage(TensorInfo weight, MergedPart part) throws IOException {
        long bytes = weight.byteSize();
        return reserve(bytes).map(buffer -> new Staged(weight, part, buffer.segment.asSlice(0, bytes), buffer));
    }

    /**
     * Memory for one expert's slab of a grouped tensor that to-hf splits. Waits while slabs being
     * written hold the memory; the layout splits in place only slabs that fit in staging, and no
     * to-hf staging waits for partners, so memory always frees up.
     */
    synchronized ExpertSlab stageExpert(String uploadedName, InPlaceLayout.SplitTarget target, int expert) throws IOException {
        long bytes = target.slabBytes();
        Buffer buffer = reserve(bytes).orElseThrow(() -> new IllegalStateException(
                "no staging memory for a " + bytes + " byte expert slab of " + uploadedName + " with none being written"));
        TensorInfo grouped = target.grouped();
        ColumnBlockedTensor blocked = new ColumnBlockedTensor(grouped.dtype(), Math.toIntExact(grouped.dim(1)),
                Math.toIntExact(grouped.dim(2)), target.blockCols(), buffer.segment.asSlice(0, bytes), () -> {});
        return new ExpertSlab(uploadedName, target, expert, buffer, blocked);
    }

    private Optional<Buffer> reserve(long bytes) throws IOException {
        while (true) {
            throwIfFailed();
            if (closed) {
                throw new IllegalStateException("the upload was closed");
            }
            Buffer fit = idle.stream().filter(b -> b.segment.byteSize() >= bytes).findFirst().orElse(null);
            if (fit != null) {
                idle.remove(fit);
                return Optional.of(fit);
            }
            if (stagingAllocated + bytes <= stagingBytes) {
                Arena arena = Arena.ofShared();
                Buffer fresh = new Buffer(arena, arena.allocate(Math.max(bytes, 1), 64));
                stagingAllocated += fresh.segment.byteSize();
                return Optional.of(fresh);
            }
            if (!idle.isEmpty()) {
                free(idle.poll());
                continue;
            }
            if (slabsInFlight == 0) {
                return Optional.empty();
            }
            try {
                wait();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new InterruptedIOException("interrupted while waiting for an expert slab to be written");
            }
        }
    }

    /**
     * Takes one whole weight, which it releases; once its slab has all its weights, the slab is written
     * on a worker, and afterwards each weight's event (a placeholder of its type and shape) is handed
     * out by {@link #drainWritten()} for the conversion's merge to count.
     */
    void add(String uploadedName, Tensor weight, MergedPart part, Placement merged) {
        Pending slab;
        synchronized (this) {
            if (closed) {
                weight.release();
                return;
            }
            SlabKey key = new SlabKey(part.merged().name(), part.slab());
            slab = pending.computeIfAbsent(key, k -> new Pending(part, merged));
            slab.weights[part.part()] = weight;
            slab.names[part.part()] = uploadedName;
            if (Arrays.stream(slab.weights).anyMatch(w -> w == null)) {
                return;
            }
            pending.remove(key);
            slabsInFlight++;
        }
        submit(() -> write(slab), () -> {
            for (Tensor w : slab.weights) {
                w.release();
            }
        });
    }

    private void write(Pending slab) {
        List<TensorEvent> events = new ArrayList<>(slab.weights.length);
        for (int j = 0; j < slab.weights.length; j++) {
            events.add(new TensorEvent(slab.names[j], Tensors.placeholder(slab.weights[j].dtype(), slab.weights[j].shape())));
        }
        StackedTransposeTensor tensor = new StackedTransposeTensor(List.of(List.of(slab.weights)), slab.part.merged().dtype());
        IOException failed = null;
        try {
            tensor.writeTo(tilesInto(slab.merged, slab.part.slab() * slab.part.slabBytes()));
        } catch (IOException | RuntimeException e) {
            failed = new IOException("writing expert slab " + slab.part.slab() + " of " + slab.part.merged().name()
                    + ": " + e.getMessage(), e);
        } finally {
            tensor.release();
        }
        slabDone(failed, () -> written.addAll(events));
    }

    /**
     * Takes one whole expert slab of a grouped tensor; its per-expert weights are transposed into their
     * places on a worker. Once every slab of the grouped tensor is on file, its event (a placeholder of
     * its type and shape) is handed out by {@link #drainWritten()} for the conversion's split to name
     * the weights, which the layout then swaps for their regions of the output.
     */
    void addExpert(ExpertSlab slab) {
        synchronized (this) {
            if (closed) {
                giveBack(slab.buffer);
                return;
            }
            slabsInFlight++;
        }
        submit(() -> write(slab), () -> giveBack(slab.buffer));
    }

    private void write(ExpertSlab slab) {
        TensorInfo grouped = slab.target.grouped();
        IOException failed = null;
        try {
            for (InPlaceLayout.SplitSlice slice : slab.target.byExpert().get(slab.expert)) {
                slab.blocked.writeColumnsTransposed(Math.toIntExact(slice.part().colStart()), Math.toIntExact(slice.part().colCount()),
                        tilesInto(slice.placement(), 0));
            }
        } catch (IOException | RuntimeException e) {
            failed = new IOException("writing expert " + slab.expert + "'s weights out of " + slab.uploadedName + ": "
                    + e.getMessage(), e);
        } finally {
            giveBack(slab.buffer);
        }
        slabDone(failed, () -> {
            if (splitSlabsWritten.merge(slab.uploadedName, 1, Integer::sum) == slab.target.experts()) {
                splitSlabsWritten.remove(slab.uploadedName);
                written.add(new TensorEvent(slab.uploadedName, Tensors.placeholder(grouped.dtype(), grouped.shape())));
            }
        });
    }

    /** Runs a slab's write on a worker; when none takes it, {@code dropped} gives back what the write would have. */
    private void submit(Runnable write, Runnable dropped) {
        try {
            workers.execute(write);
        } catch (RuntimeException e) {
            dropped.run();
            synchronized (this) {
                slabsInFlight--;
                notifyAll();
            }
            throw e;
        }
    }

    /** A slab's write ended: the upload's first failure is kept, and a success runs {@code written} under the lock. */
    private synchronized void slabDone(IOException failed, Runnable written) {
        slabsInFlight--;
        if (failed == null) {
            written.run();
        } else if (failure == null) {
            failure = failed;
        }
        notifyAll();
    }

    /** Writes tile after tile into {@code place}, from {@code offset} bytes into it, under its file's write lock. */
    private static ByteSink tilesInto(Placement place, long offset) {
        long[] at = {place.offset() + offset};
        return tile -> {
            FileWrites.write(place.channel(), tile.asByteBuffer(), at[0], place.writeLock());
            at[0] += tile.byteSize();
        };
    }

    /** Events of weights whose slabs are on file; throws if a slab could not be written. */
    List<TensorEvent> drainWritten() throws IOException {
        synchronized (this) {
            throwIfFailed();
        }
        List<TensorEvent> out = new ArrayList<>();
        for (TensorEvent e; (e = written.poll()) != null; ) {
            out.add(e);
        }
        return out;
    }

    /** Waits for every slab being written; then as {@link #drainWritten()}. */
    List<TensorEvent> finish() throws IOException {
        synchronized (this) {
            while (slabsInFlight > 0) {
                try {
                    wait();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new InterruptedIOException("interrupted while waiting for expert slabs to be written");
                }
            }
        }
        return drainWritten();
    }

    /** Releases weights still waiting for their partners; slabs being written finish on their own. */
    @Override
    public synchronized void close() {
        closed = true;
        pending.values().forEach(p -> {
            for (Tensor w : p.weights) {
                if (w != null) {
                    w.release();
                }
            }
        });
        pending.clear();
        while (!idle.isEmpty()) {
            free(idle.poll());
        }
    }

    private void throwIfFailed() throws IOException {
        if (failure != null) {
            // A fresh exception per throw: the receiver's stack, with the worker's failure as its cause.
            throw new IOException(failure.getMessage(), failure);
        }
    }

    private synchronized void giveBack(Buffer buffer) {
        if (closed) {
            free(buffer);
        } else {
            idle.push(buffer);
        }
        notifyAll();
    }

    private void free(Buffer buffer) {
        stagingAllocated -= buffer.segment.byteSize();
        buffer.arena.close();
    }

    /** A staging buffer, shared: the receiver fills it and a worker transposes it. */
    private record Buffer(Arena arena, MemorySegment segment) {}

    private record SlabKey(String merged, int slab) {}

    private static final class Pending {
        final MergedPart part;
        final Placement merged;
        final Tensor[] weights;
        final String[] names;

        Pending(MergedPart part, Placement merged) {
            this.part = part;
            this.merged = merged;
            this.weights = new Tensor[part.partsPerSlab()];
            this.names = new String[part.partsPerSlab()];
        }
    }

    /**
     * Staging memory for one weight: fill it with {@link #put}, then make it a tensor that gives the
     * memory back on release. A weight is held in column blocks as wide as its slab's tiles, so the
     * slab's transposition reads it sequentially.
     */
    final class Staged {
        private final Buffer buffer;
        private final ColumnBlockedTensor blocked;

        /** Weights of a merged tensor are 2-D, its slabs {@code [cols, width]}: the merge checks both when planning. */
        private Staged(TensorInfo weight, MergedPart part, MemorySegment segment, Buffer buffer) {
            this.buffer = buffer;
            long[] merged = part.merged().shape();
            int blockCols = StackedTransposeTensor.tileRows(Math.toIntExact(merged[1]), Math.toIntExact(merged[2]),
                    part.merged().dtype());
            this.blocked = new ColumnBlockedTensor(weight.dtype(), Math.toIntExact(weight.dim(0)), Math.toIntExact(weight.dim(1)),
                    blockCols, segment, () -> giveBack(buffer));
        }

        /** Puts bytes {@code [offset, offset + n)} of the weight, in row-major order, from {@code src}. */
        void put(long offset, MemorySegment src, long n) {
            blocked.putRowMajor(offset, src, 0, n);
        }

        Tensor toTensor() {
            return blocked;
        }

        /** Gives the memory back unused, when the upload ends before the weight is whole. */
        void discard() {
            giveBack(buffer);
        }
    }

    /**
     * Staging memory for one expert's slab of a grouped tensor, held in column blocks so that each tile
     * of a weight's transposition reads one block sequentially, as from-hf's weights are.
     */
    final class ExpertSlab {
        private final String uploadedName;
        private final InPlaceLayout.SplitTarget target;
        private final int expert;
        private final Buffer buffer;
        private final ColumnBlockedTensor blocked;

        private ExpertSlab(String uploadedName, InPlaceLayout.SplitTarget target, int expert, Buffer buffer, ColumnBlockedTensor blocked) {
            this.uploadedName = uploadedName;
            this.target = target;
            this.expert = expert;
            this.buffer = buffer;
            this.blocked = blocked;
        }

        /** Puts bytes {@code [offset, offset + n)} of the slab, in row-major order, from {@code src}. */
        void put(long offset, MemorySegment src, long n) {
            blocked.putRowMajor(offset, src, 0, n);
        }

        /** Gives the memory back unused, when the upload ends before the slab is whole. */
        void discard() {
            giveBack(buffer);
        }
    }
}
