package io.moeflux.serve;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.junit.jupiter.api.Test;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;
import reactor.core.scheduler.Scheduler;
import reactor.core.scheduler.Schedulers;

/**
 * Cancelling an upload must not interrupt the thread that spools its body: an interrupt inside
 * {@code FileChannel.map} leaks the mapping for the life of the process (a CI run found a spool file
 * still mapped after its upload was aborted).
 */
class BodyReaderTest {
    /** Whether a chunk being spooled on {@code scheduler} sees an interrupt when its upload is cancelled. */
    private static boolean interruptedByCancel(Scheduler scheduler) throws InterruptedException {
        CountDownLatch spooling = new CountDownLatch(1);
        CountDownLatch done = new CountDownLatch(1);
        AtomicBoolean interrupted = new AtomicBoolean();
        Disposable upload = Flux.just(1).publishOn(scheduler).subscribe(chunk -> {
            spooling.countDown();
            long end = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(300);
            while (System.nanoTime() < end && !Thread.currentThread().isInterrupted()) {
                Thread.onSpinWait();
            }
            interrupted.set(Thread.interrupted());
            done.countDown();
        });
        assertThat(spooling.await(10, TimeUnit.SECONDS)).isTrue();
        upload.dispose();
        assertThat(done.await(10, TimeUnit.SECONDS)).isTrue();
        return interrupted.get();
    }

    @Test
    void aCancelledUploadDoesNotInterruptTheChunkBeingSpooled() throws Exception {
        ExecutorService threads = Executors.newCachedThreadPool();
        try {
            assertThat(interruptedByCancel(IngestServer.bodyReader(threads))).isFalse();
        } finally {
            threads.shutdownNow();
        }
    }

    /** Why the service has a reader of its own: the shared elastic scheduler does interrupt. */
    @Test
    void boundedElasticInterruptsACancelledChunk() throws Exception {
        Scheduler elastic = Schedulers.newBoundedElastic(1, 10, "interrupt-check");
        try {
            assertThat(interruptedByCancel(elastic)).isTrue();
        } finally {
            elastic.dispose();
        }
    }
}
