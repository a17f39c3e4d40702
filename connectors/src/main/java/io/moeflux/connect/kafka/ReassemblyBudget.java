package io.moeflux.connect.kafka;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import reactor.core.publisher.Mono;
import reactor.core.publisher.MonoSink;

/**
 * Counts the bytes of tensors being reassembled and of tensors handed downstream but not yet
 * released, and makes a new tensor wait while the total would pass the limit.
 *
 * <p>Only tensors held downstream can free room, so a reservation waits only while some are: with
 * none, waiting would never end (the tensors in progress need more records to finish), and it goes
 * ahead over the limit instead.
 */
final class ReassemblyBudget {
    private record Waiter(long bytes, MonoSink<Void> sink) {}

    private final long limit;
    private final ArrayDeque<Waiter> waiters = new ArrayDeque<>();
    private long inProgress;
    private long handedOut;
    private long peak;

    ReassemblyBudget(long limit) {
        this.limit = limit;
    }

    /** Completes once {@code bytes} are reserved for a tensor in progress. */
    Mono<Void> reserve(long bytes) {
        return Mono.defer(() -> {
            if (tryReserve(bytes)) {
                return Mono.empty();
            }
            return Mono.create(sink -> {
                Waiter w = new Waiter(bytes, sink);
                synchronized (this) {
                    waiters.add(w);
                }
                sink.onCancel(() -> {
                    synchronized (this) {
                        waiters.remove(w);
                    }
                });
                wakeWaiters();
            });
        });
    }

    private synchronized boolean tryReserve(long bytes) {
        if (inProgress + handedOut + bytes > limit && handedOut > 0) {
            return false;
        }
        inProgress += bytes;
        peak = Math.max(peak, inProgress + handedOut);
        return true;
    }

    /** A reassembled tensor goes downstream; its bytes count until {@link #released}. */
    synchronized void handedOut(long bytes) {
        inProgress -= bytes;
        handedOut += bytes;
    }

    void released(long bytes) {
        synchronized (this) {
            handedOut -= bytes;
        }
        wakeWaiters();
    }

    /** A tensor in progress was dropped (error or cancel). */
    void abandoned(long bytes) {
        synchronized (this) {
            inProgress -= bytes;
        }
        wakeWaiters();
    }

    private void wakeWaiters() {
        List<MonoSink<Void>> ready = new ArrayList<>();
        synchronized (this) {
            while (!waiters.isEmpty() && tryReserve(waiters.peek().bytes())) {
                ready.add(waiters.poll().sink());
            }
        }
        ready.forEach(MonoSink::success);
    }

    synchronized boolean hasWaiters() {
        return !waiters.isEmpty();
    }

    /** The most bytes held at once. */
    synchronized long peakBytes() {
        return peak;
    }
}
