package io.moeflux.connect.http;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

/**
 * Memory in which an upload holds tensors that will be read transposed (expert weights), column-blocked,
 * instead of spooling them: up to a limit, in buffers reused from tensor to tensor (fresh ones cost a zero
 * fill and page faults).
 *
 * <p>When it is used up, the upload waits for a buffer only if one is held by a tensor whose slab has all
 * its weights in: the conversion then writes that slab and lets the buffer go without reading further.
 * When every buffer is held by weights still waiting for a partner (an upload that sends all gates, then
 * all ups), waiting could never end, so the next weight is spooled instead.
 */
final class StagingMemory {
    /** A buffer, or a future that completes when one is freed, or neither (spool). */
    record Grant(Buffer buffer, CompletableFuture<Void> freed) {
        static final Grant SPOOL = new Grant(null, null);
    }

    /** A staging buffer and the slab its tensor belongs to. */
    static final class Buffer {
        final MemorySegment segment;
        private final Arena arena;
        String slab;

        private Buffer(Arena arena, MemorySegment segment) {
            this.arena = arena;
            this.segment = segment;
        }
    }

    private final long limit;
    private final ArrayDeque<Buffer> idle = new ArrayDeque<>();
    private final List<Buffer> inUse = new ArrayList<>();
    /** Per slab, how many of its weights have arrived whole. */
    private final Map<String, Integer> weightsIn = new HashMap<>();
    private final Map<String, Integer> weightsPerSlab = new HashMap<>();
    private final List<CompletableFuture<Void>> waiting = new ArrayList<>();
    private long allocated;
    private boolean closed;

    StagingMemory(long limit) {
        this.limit = limit;
    }

    synchronized Grant take(long bytes, String slab, int partsPerSlab) {
        weightsPerSlab.put(slab, partsPerSlab);
        if (closed || bytes > limit) {
            return Grant.SPOOL;
        }
        while (true) {
            Buffer fit = idle.stream().filter(b -> b.segment.byteSize() >= bytes).findFirst().orElse(null);
            if (fit != null) {
                idle.remove(fit);
                return use(fit, slab);
            }
            if (allocated + bytes <= limit) {
                Arena arena = Arena.ofShared();
                Buffer fresh = new Buffer(arena, arena.allocate(bytes, 64));
                allocated += bytes;
                return use(fresh, slab);
            }
            if (idle.isEmpty()) {
                break;
            }
            free(idle.poll());
        }
        boolean aSlabCanFinish = inUse.stream().anyMatch(b -> weightsIn.getOrDefault(b.slab, 0) >= weightsPerSlab.get(b.slab));
        if (!aSlabCanFinish) {
            return Grant.SPOOL;
        }
        CompletableFuture<Void> freed = new CompletableFuture<>();
        waiting.add(freed);
        return new Grant(null, freed);
    }

    private Grant use(Buffer buffer, String slab) {
        buffer.slab = slab;
        inUse.add(buffer);
        return new Grant(buffer, null);
    }

    /** One of the slab's weights has arrived whole, held here or spooled. */
    synchronized void weightIn(String slab) {
        weightsIn.merge(slab, 1, Integer::sum);
    }

    void giveBack(Buffer buffer) {
        List<CompletableFuture<Void>> wake;
        synchronized (this) {
            inUse.remove(buffer);
            if (closed) {
                free(buffer);
            } else {
                idle.push(buffer);
            }
            wake = List.copyOf(waiting);
            waiting.clear();
        }
        wake.forEach(f -> f.complete(null));
    }

    /** Frees idle buffers; buffers still in use are freed when given back. Wakes whoever waits. */
    void close() {
        List<CompletableFuture<Void>> wake;
        synchronized (this) {
            closed = true;
            while (!idle.isEmpty()) {
                free(idle.poll());
            }
            wake = List.copyOf(waiting);
            waiting.clear();
        }
        wake.forEach(f -> f.complete(null));
    }

    private void free(Buffer buffer) {
        allocated -= buffer.segment.byteSize();
        buffer.arena.close();
    }
}
