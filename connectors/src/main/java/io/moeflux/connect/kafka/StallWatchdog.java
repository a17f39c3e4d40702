package io.moeflux.connect.kafka;

import java.time.Duration;
import java.util.function.BooleanSupplier;
import java.util.function.Supplier;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Fails a record stream that was asked for records and got none for too long: the end of the topic
 * came before the commit record. A slow downstream does not count, because it asks for nothing, and
 * neither does time spent waiting on {@code excused} (for example for reassembly room).
 */
final class StallWatchdog {
    private final Duration timeout;
    private final BooleanSupplier excused;
    private final Supplier<String> diagnosis;
    private long outstanding;
    private long lastActivityNanos = System.nanoTime();

    StallWatchdog(Duration timeout, BooleanSupplier excused, Supplier<String> diagnosis) {
        this.timeout = timeout;
        this.excused = excused;
        this.diagnosis = diagnosis;
    }

    <T> Flux<T> guard(Flux<T> records) {
        Duration tick = timeout.dividedBy(4).compareTo(Duration.ofSeconds(1)) > 0 ? Duration.ofSeconds(1) : timeout.dividedBy(4);
        Mono<T> stalled = Flux.interval(tick)
                .onBackpressureDrop()
                .filter(t -> isStalled())
                .next()
                .flatMap(t -> Mono.error(() -> new KafkaCheckpointException(diagnosis.get() + ": no record arrived for "
                        + timeout.toSeconds() + " s although more were expected (the publisher died before its commit "
                        + "record, or chunks are missing at the end of the topic)")));
        return records.doOnNext(r -> onNext())
                .doOnRequest(this::onRequest)
                .takeUntilOther(stalled);
    }

    private synchronized void onRequest(long n) {
        if (outstanding == 0) {
            lastActivityNanos = System.nanoTime();
        }
        outstanding = outstanding + n < 0 ? Long.MAX_VALUE : outstanding + n;
    }

    private synchronized void onNext() {
        if (outstanding != Long.MAX_VALUE) {
            outstanding--;
        }
        lastActivityNanos = System.nanoTime();
    }

    private synchronized boolean isStalled() {
        if (excused.getAsBoolean()) {
            lastActivityNanos = System.nanoTime();
            return false;
        }
        return outstanding > 0 && System.nanoTime() - lastActivityNanos > timeout.toNanos();
    }
}
