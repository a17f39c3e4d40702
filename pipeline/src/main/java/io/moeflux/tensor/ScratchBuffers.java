package io.moeflux.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Reusable off-heap tile buffers for lazily computed tensors.
 *
 * <p>Every expert slab is produced through a tile buffer; allocating a fresh one per slab means
 * zero-filling it and faulting its pages in, which cost as much as the transposition itself. A few
 * buffers, kept for the life of the process, serve every writer thread in turn.
 */
final class ScratchBuffers {
    private ScratchBuffers() {}

    /** More than enough for one buffer per writer thread; extra buffers are freed on return. */
    private static final int MAX_POOLED = 8;

    private static final ConcurrentLinkedQueue<Pooled> POOL = new ConcurrentLinkedQueue<>();
    private static final AtomicInteger POOLED = new AtomicInteger();

    /** A buffer of at least {@code bytes}; give it back with {@link Pooled#close()}. */
    static Pooled borrow(long bytes) {
        Pooled p;
        while ((p = POOL.poll()) != null) {
            POOLED.decrementAndGet();
            if (p.segment.byteSize() >= bytes) {
                return p;
            }
            p.arena.close();
        }
        Arena arena = Arena.ofShared();
        return new Pooled(arena, arena.allocate(bytes, 64));
    }

    record Pooled(Arena arena, MemorySegment segment) implements AutoCloseable {
        @Override
        public void close() {
            if (POOLED.incrementAndGet() <= MAX_POOLED) {
                POOL.offer(this);
            } else {
                POOLED.decrementAndGet();
                arena.close();
            }
        }
    }
}
