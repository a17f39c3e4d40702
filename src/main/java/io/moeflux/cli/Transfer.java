package io.moeflux.cli;

import io.moeflux.connect.kafka.KafkaEndpoint;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSink;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.TensorInfo;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Function;
import java.util.function.Supplier;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Runs one write of a tensor stream into a sink, the part every writing command shares: progress on
 * the terminal, cancellation on Ctrl-C (so the sink removes its staging folder instead of leaving a
 * half-written output), and the summary.
 */
final class Transfer {
    private Transfer() {}

    /**
     * What a command read and wrote.
     *
     * @param inputTensors tensors in the input, or -1 when the input did not say up front
     * @param inputBytes   their bytes, or -1
     */
    record Summary(String command, String input, long inputTensors, long inputBytes, CommitSummary committed,
            double seconds) {
        double gigabytesPerSecond() {
            return seconds > 0 ? committed.bytes() / seconds / 1e9 : 0;
        }

        String line() {
            String in = inputTensors >= 0
                    ? Human.count(inputTensors, "tensor") + " (" + Human.bytes(inputBytes) + ") -> "
                    : "";
            // A topic has no files: a Kafka destination is named, not counted in files.
            String files = KafkaEndpoint.isKafka(committed.location()) ? "" : " in " + Human.count(committed.files(), "file");
            return command + ": " + in + Human.count(committed.tensors(), "tensor") + " (" + Human.bytes(committed.bytes())
                    + ")" + files + ", " + Human.duration(seconds) + ", " + Human.rate(committed.bytes() / Math.max(seconds, 1e-9))
                    + " -> " + committed.location();
        }

        Map<String, Object> json() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("command", command);
            m.put("input", input);
            m.put("output", committed.location());
            if (inputTensors >= 0) {
                m.put("input_tensors", inputTensors);
                m.put("input_bytes", inputBytes);
            }
            m.put("tensors", committed.tensors());
            m.put("bytes", committed.bytes());
            m.put("files", committed.files());
            m.put("seconds", seconds);
            m.put("gigabytes_per_second", gigabytesPerSecond());
            return m;
        }
    }

    /**
     * Writes {@code events} to {@code output} and waits for the commit.
     *
     * @param input           the source's location, for the summary
     * @param inputDescriptor what the source described (its tensors are counted in the summary)
     * @param planned         what the sink is told to expect (its tensors size the progress display)
     * @param events          the stream for the sink, which may depend on it (whether it places pieces)
     */
    static Summary run(String command, String input, CheckpointDescriptor inputDescriptor, String output,
            Endpoints.SinkSettings settings, CheckpointDescriptor planned, Function<CheckpointSink, Flux<TensorEvent>> events,
            PrintWriter err) {
        List<TensorInfo> in = inputDescriptor.tensors().orElse(null);
        List<TensorInfo> out = planned.tensors().orElse(List.of());
        long start = System.nanoTime();
        CommitSummary committed;
        try (ConsoleProgress progress = ConsoleProgress.start(err, command, out.size(), totalBytes(out))) {
            boolean existed = !KafkaEndpoint.isKafka(output) && Files.exists(Path.of(output));
            // Once cancelled, the line says what the output is: what it was, unless its commit had already happened.
            Supplier<String> cancelled = () -> existed ? "moeflux " + command + ": cancelled"
                    : !KafkaEndpoint.isKafka(output) && Files.exists(Path.of(output))
                            ? "moeflux " + command + ": cancelled after " + output + " was committed"
                            : "moeflux " + command + ": cancelled; nothing was committed";
            CheckpointSink sink = Endpoints.sink(output, settings.withProgress(progress));
            committed = awaitCancellingOnExit(sink.write(planned, events.apply(sink))
                    .doOnSuccess(c -> OUTPUT_COMMITTED.set(true)), cancelled, err);
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        return new Summary(command, input, in == null ? -1 : in.size(), in == null ? -1 : totalBytes(in), committed, seconds);
    }

    private static final AtomicBoolean CANCEL_ANNOUNCED = new AtomicBoolean();
    /** Set once a write has committed: a Ctrl-C after that (while the summary prints) has nothing to undo or announce. */
    private static final AtomicBoolean OUTPUT_COMMITTED = new AtomicBoolean();
    /** Runs being awaited: while one is, its own hook announces a cancel (it knows what was committed). */
    private static final AtomicInteger RUNNING = new AtomicInteger();

    /**
     * Whether this caller is the one to print the line that says a run was cancelled: the hook of a
     * running write, or {@link Main}'s for a run cancelled before it wrote anything. Once per process.
     */
    static boolean announceCancel() {
        return RUNNING.get() == 0 && !OUTPUT_COMMITTED.get() && CANCEL_ANNOUNCED.compareAndSet(false, true);
    }

    static long totalBytes(List<TensorInfo> infos) {
        long sum = 0;
        for (TensorInfo i : infos) {
            sum += i.byteSize();
        }
        return sum;
    }

    /**
     * Subscribes and waits; if the JVM is asked to exit meanwhile (Ctrl-C), the subscription is
     * cancelled first, so resources are released and nothing half-written is committed, and {@code err}
     * gets one line saying so (the JVM then exits with 130).
     *
     * <p>The hook is registered before subscribing, since subscribing creates the output's staging
     * folder: a signal that lands while it is being made waits until it exists and then removes it. A
     * signal that came before the hook could be registered cancels the work before it starts.
     */
    static <T> T awaitCancellingOnExit(Mono<T> work, String command, PrintWriter err) {
        return awaitCancellingOnExit(work, () -> "moeflux " + command + ": cancelled", err);
    }

    /** As {@link #awaitCancellingOnExit(Mono, String, PrintWriter)}, with the line a cancel prints made once it has happened. */
    static <T> T awaitCancellingOnExit(Mono<T> work, Supplier<String> cancelledLine, PrintWriter err) {
        CompletableFuture<T> result = new CompletableFuture<>();
        AtomicReference<Disposable> subscription = new AtomicReference<>();
        CountDownLatch subscribed = new CountDownLatch(1);
        Thread cancelOnExit = new Thread(() -> {
            try {
                subscribed.await(10, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            if (result.isDone()) {
                return;
            }
            Disposable running = subscription.get();
            if (running != null) {
                running.dispose();
            }
            if (CANCEL_ANNOUNCED.compareAndSet(false, true)) {
                err.println(cancelledLine.get());
                err.flush();
            }
        }, "moeflux-cancel-on-exit");
        try {
            Runtime.getRuntime().addShutdownHook(cancelOnExit);
        } catch (IllegalStateException shuttingDown) {
            throw new CancellationException("cancelled before anything was written");
        }
        RUNNING.incrementAndGet();
        try {
            subscription.set(work.subscribe(result::complete, result::completeExceptionally, () -> result.complete(null)));
        } finally {
            subscribed.countDown();
        }
        try {
            return result.join();
        } catch (CompletionException e) {
            throw e.getCause() instanceof RuntimeException r ? r : e;
        } finally {
            RUNNING.decrementAndGet();
            try {
                Runtime.getRuntime().removeShutdownHook(cancelOnExit);
            } catch (IllegalStateException shuttingDown) {
                // The hook is running or has run; nothing left to undo.
            }
        }
    }
}
