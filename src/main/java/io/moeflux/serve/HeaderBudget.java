package io.moeflux.serve;

import io.moeflux.tensor.Releasable;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * The heap that the safetensors headers of running uploads may take together. A header costs a few
 * times its length while it is parsed and its tensors are listed, so each blob reserves its header's
 * length here before anything is allocated for it and keeps it until the blob ends; a header that does
 * not fit is turned away (503) instead of risking the heap that every upload shares.
 */
final class HeaderBudget {
    private final long limit;
    private long held;

    HeaderBudget(long limit) {
        this.limit = limit;
    }

    /** Reserves {@code bytes} for the header of {@code where}, or throws {@link ServiceBusyException}. */
    synchronized Releasable reserve(long bytes, String where) {
        if (held + bytes > limit) {
            throw new ServiceBusyException(where + ": the service is parsing as many safetensors headers as it holds at once ("
                    + limit + " bytes); send it again shortly");
        }
        held += bytes;
        AtomicBoolean released = new AtomicBoolean();
        return () -> {
            if (released.compareAndSet(false, true)) {
                synchronized (this) {
                    held -= bytes;
                }
            }
        };
    }
}
