package io.moeflux.cli;

import io.moeflux.pipeline.Progress;
import java.io.PrintWriter;
import java.util.Locale;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.LongAdder;

/**
 * A one-line progress display on a terminal: tensors, bytes, throughput and ETA, redrawn four times a
 * second by a daemon thread. Writer threads only bump counters, so reporting costs them nothing.
 */
final class ConsoleProgress implements Progress, AutoCloseable {
    private static final long REDRAW_MILLIS = 250;

    private final PrintWriter err;
    private final String label;
    private final long totalTensors;
    private final long totalBytes;
    private final LongAdder tensors = new LongAdder();
    private final LongAdder bytes = new LongAdder();
    private final long startNanos = System.nanoTime();
    private final ScheduledExecutorService ticker;

    /**
     * Shows progress on {@code err} when the process runs on a terminal; otherwise a {@link Progress}
     * that counts silently, so logs and pipes stay clean.
     *
     * @param totalTensors expected tensors, or 0 when unknown
     * @param totalBytes   expected bytes, or 0 when unknown (then no ETA is shown)
     */
    static ConsoleProgress start(PrintWriter err, String label, long totalTensors, long totalBytes) {
        var console = System.console();
        return new ConsoleProgress(err, label, totalTensors, totalBytes,
                redraws(console != null && console.isTerminal(), System.getenv("TERM")));
    }

    /** A line redrawn in place needs a terminal that understands the erase-line escape, which {@code TERM=dumb} does not. */
    static boolean redraws(boolean terminal, String term) {
        return terminal && !"dumb".equals(term);
    }

    /** {@code show}: redraw on a timer; otherwise only count. */
    ConsoleProgress(PrintWriter err, String label, long totalTensors, long totalBytes, boolean show) {
        this.err = err;
        this.label = label;
        this.totalTensors = totalTensors;
        this.totalBytes = totalBytes;
        if (show) {
            ticker = Executors.newSingleThreadScheduledExecutor(r -> Thread.ofPlatform().daemon().name("moeflux-progress").unstarted(r));
            ticker.scheduleAtFixedRate(this::redraw, REDRAW_MILLIS, REDRAW_MILLIS, TimeUnit.MILLISECONDS);
        } else {
            ticker = null;
        }
    }

    @Override
    public void bytesWritten(long n) {
        bytes.add(n);
    }

    @Override
    public void tensorWritten(String fqn) {
        tensors.increment();
    }

    void redraw() {
        double seconds = (System.nanoTime() - startNanos) / 1e9;
        long b = bytes.sum();
        double rate = seconds > 0 ? b / seconds : 0;
        StringBuilder line = new StringBuilder("\r\033[K").append(label).append(": ")
                .append(Human.count(tensors.sum()));
        if (totalTensors > 0) {
            line.append("/" + Human.count(totalTensors));
        }
        line.append(" tensors, ").append(Human.bytes(b));
        if (totalBytes > 0) {
            line.append(" of ").append(Human.bytes(totalBytes))
                    .append(String.format(Locale.ROOT, " (%.0f%%)", 100.0 * b / totalBytes));
        }
        line.append(", ").append(Human.rate(rate));
        if (totalBytes > 0 && rate > 0 && b < totalBytes) {
            line.append(", ETA ").append(Human.duration((totalBytes - b) / rate));
        }
        synchronized (err) {
            err.print(line);
            err.flush();
        }
    }

    /** Stops redrawing and clears the line, so the summary that follows starts clean. */
    @Override
    public void close() {
        if (ticker != null) {
            ticker.shutdownNow();
            try {
                ticker.awaitTermination(1, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            synchronized (err) {
                err.print("\r\033[K");
                err.flush();
            }
        }
    }
}
