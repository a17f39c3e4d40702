package io.moeflux.tensor;

import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Runs a cleanup once every handle taken from it has been released.
 *
 * <p>A mapped shard is shared by all tensors sliced from it and by the source that maps it; each takes
 * its own handle, so the mapping is unmapped only when the last of them lets go, on whichever thread
 * that happens. Each handle releases at most once, so a double release cannot free memory still in use.
 */
public final class RefCounted {
    private final AtomicLong count = new AtomicLong();
    private final Runnable onZero;

    private RefCounted(Runnable onZero) {
        this.onZero = onZero;
    }

    /** A counter with no handles yet; the first {@link #retain()} is the owner's. */
    public static RefCounted onLastRelease(Runnable onZero) {
        return new RefCounted(onZero);
    }

    /** Takes a handle; throws {@link IllegalStateException} once the cleanup has run. */
    public Releasable retain() {
        long c;
        do {
            c = count.get();
            if (c < 0) {
                throw new IllegalStateException("already released");
            }
        } while (!count.compareAndSet(c, c + 1));
        AtomicBoolean done = new AtomicBoolean();
        return () -> {
            if (done.compareAndSet(false, true) && count.decrementAndGet() == 0 && count.compareAndSet(0, -1)) {
                onZero.run();
            }
        };
    }

    /** True once the cleanup has run. */
    public boolean isReleased() {
        return count.get() < 0;
    }
}
