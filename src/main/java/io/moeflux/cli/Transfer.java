package io.moeflux.cli;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.TensorInfo;
import java.io.PrintWriter;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
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
                    ? Human.count(inputTensors) + " tensors (" + Human.bytes(inputBytes) + ") -> "
                    : "";
            return command + ": " + in + Human.count(committed.tensors()) + " tensors (" + Human.bytes(committed.bytes())
                    + ") in " + committed.files() + (committed.files() == 1 ? " file" : " files") + ", "
                    + Human.duration(seconds) + ", " + Human.rate(committed.bytes() / Math.max(seconds, 1e-9))
                    + " -> " + committed.location();
        }

        Map<String, Object> json() {
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("command", command);
            m.put("input", input);
            m.put("output", committed.location());
            if (inputTensors >= 0) {
                m.put("inputTensors", inputTensors);
                m.put("inputBytes", inputBytes);
            }
            m.put("tensors", committed.tensors());
            m.put("bytes", committed.bytes());
            m.put("files", committed.files());
            m.put("seconds", seconds);
            m.put("gigabytesPerSecond", gigabytesPerSecond());
            return m;
        }
    }

    /**
     * Writes {@code events} to {@code output} and waits for the commit.
     *
     * @param input           the source's location, for the summary
     * @param inputDescriptor what the source described (its tensors are counted in the summary)
     * @param planned         what the sink is told to expect (its tensors size the progress display)
     */
    static Summary run(String command, String input, CheckpointDescriptor inputDescriptor, String output,
            Endpoints.SinkSettings settings, CheckpointDescriptor planned, Flux<TensorEvent> events, PrintWriter err) {
        List<TensorInfo> in = inputDescriptor.tensors().orElse(null);
        List<TensorInfo> out = planned.tensors().orElse(List.of());
        long start = System.nanoTime();
        CommitSummary committed;
        try (ConsoleProgress progress = ConsoleProgress.start(err, command, out.size(), totalBytes(out))) {
            committed = awaitCancellingOnExit(Endpoints.sink(output, settings.withProgress(progress)).write(planned, events));
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        return new Summary(command, input, in == null ? -1 : in.size(), in == null ? -1 : totalBytes(in), committed, seconds);
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
     * cancelled first so resources are released and nothing half-written is committed.
     */
    static <T> T awaitCancellingOnExit(Mono<T> work) {
        CompletableFuture<T> result = new CompletableFuture<>();
        Disposable subscription = work.subscribe(result::complete, result::completeExceptionally,
                () -> result.complete(null));
        Thread cancelOnExit = new Thread(subscription::dispose, "moeflux-cancel-on-exit");
        Runtime.getRuntime().addShutdownHook(cancelOnExit);
        try {
            return result.join();
        } catch (CompletionException e) {
            throw e.getCause() instanceof RuntimeException r ? r : e;
        } finally {
            try {
                Runtime.getRuntime().removeShutdownHook(cancelOnExit);
            } catch (IllegalStateException shuttingDown) {
                // The hook is running or has run; nothing left to undo.
            }
        }
    }
}
