package io.moeflux.serve;

import io.moeflux.connect.http.UploadSourceOptions;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.Progress;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Supplier;

/** One upload's state and progress, as {@code GET /v1/checkpoints/{id}} reports it; updated from any thread. */
final class UploadStatus implements Progress, UploadSourceOptions.Listener {
    enum State {
        RECEIVING, COMMITTED, FAILED, ABORTED;

        String json() {
            return name().toLowerCase(java.util.Locale.ROOT);
        }
    }

    private final String id;
    private final IngestMetrics metrics;
    /** More to report, for a checkpoint uploaded in parts. */
    private volatile Supplier<Map<String, Object>> details = Map::of;
    private final long startNanos = System.nanoTime();
    private final AtomicLong bytesReceived = new AtomicLong();
    private final AtomicLong tensorsReceived = new AtomicLong();
    private final AtomicLong bytesSpooled = new AtomicLong();
    private final AtomicLong bytesWritten = new AtomicLong();
    private final AtomicLong tensorsWritten = new AtomicLong();
    private volatile State state = State.RECEIVING;
    private volatile long endNanos;
    private volatile long lastByteNanos = startNanos;
    private volatile String error;
    private volatile CommitSummary summary;
    private volatile String note;

    UploadStatus(String id, IngestMetrics metrics) {
        this.id = id;
        this.metrics = metrics;
        metrics.uploadStarted();
    }

    State state() {
        return state;
    }

    /** Reports {@code more} too, after the upload's own fields. */
    void reportAlso(Supplier<Map<String, Object>> more) {
        details = more;
    }

    @Override
    public void bytesReceived(long n) {
        lastByteNanos = System.nanoTime();
        bytesReceived.addAndGet(n);
        metrics.bytesReceived.increment(n);
    }

    @Override
    public void bytesSpooled(long n) {
        bytesSpooled.addAndGet(n);
    }

    @Override
    public void tensorReceived() {
        tensorsReceived.incrementAndGet();
        metrics.tensorsReceived.increment();
    }

    @Override
    public void bytesWritten(long bytes) {
        bytesWritten.addAndGet(bytes);
        metrics.bytesWritten.increment(bytes);
    }

    @Override
    public void tensorWritten(String fqn) {
        tensorsWritten.incrementAndGet();
        metrics.tensorsWritten.increment();
    }

    synchronized void committed(CommitSummary s) {
        if (state == State.RECEIVING) {
            summary = s;
            end(State.COMMITTED);
        }
    }

    /** Fails the upload unless it has ended already; returns whether it did. */
    synchronized boolean failed(String message) {
        if (state != State.RECEIVING) {
            return false;
        }
        error = message;
        end(State.FAILED);
        return true;
    }

    /**
     * The sink already holds this checkpoint, committed before: it stays, so the checkpoint's state is
     * committed, and {@code note} says that this upload added nothing to it.
     */
    synchronized void foundCommitted(String note) {
        if (state == State.RECEIVING) {
            this.note = note;
            end(State.COMMITTED, "conflict");
        }
    }

    /** Aborts the upload unless it has ended already; returns whether it did. */
    synchronized boolean aborted(String why) {
        if (state != State.RECEIVING) {
            return false;
        }
        error = why;
        end(State.ABORTED);
        return true;
    }

    /** Why the upload failed or was aborted, or null. */
    String error() {
        return error;
    }

    /** {@code 30 min}, {@code 2 s}, {@code 500 ms}: a timeout as an error message names it. */
    static String duration(Duration d) {
        if (d.toMillis() % 60_000 == 0) {
            return d.toMinutes() + " min";
        }
        return d.toMillis() % 1000 == 0 ? d.toSeconds() + " s" : d.toMillis() + " ms";
    }

    private void end(State s) {
        end(s, s.json());
    }

    /**
     * Ends the upload, once (every caller checks it is still receiving): counted in the metrics, and one
     * line on stderr with its id, outcome, bytes and time, and why it failed.
     */
    private void end(State s, String outcome) {
        endNanos = System.nanoTime();
        state = s;
        metrics.uploadEnded(outcome, Duration.ofNanos(endNanos - startNanos));
        System.err.println(String.format(Locale.ROOT, "moeflux serve: upload %s %s: %,d bytes received, %,d written in %.1f s%s",
                id, state.json(), bytesReceived.get(), bytesWritten.get(), seconds(),
                error != null ? ": " + error : note != null ? ": " + note : ""));
        System.err.flush();
    }

    /** How long ago the body's last bytes arrived (or the upload began). */
    Duration sinceLastByte() {
        return Duration.ofNanos(System.nanoTime() - lastByteNanos);
    }

    double seconds() {
        long end = state == State.RECEIVING ? System.nanoTime() : endNanos;
        return (end - startNanos) / 1e9;
    }

    Map<String, Object> toJson() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("id", id);
        m.put("state", state.json());
        m.put("bytes_received", bytesReceived.get());
        m.put("tensors_received", tensorsReceived.get());
        m.put("bytes_spooled", bytesSpooled.get());
        m.put("tensors_written", tensorsWritten.get());
        m.put("bytes_written", bytesWritten.get());
        m.put("seconds", seconds());
        m.putAll(details.get());
        CommitSummary s = summary;
        if (s != null) {
            m.put("location", s.location());
            m.put("tensors", s.tensors());
            m.put("bytes", s.bytes());
            m.put("files", s.files());
        }
        if (error != null) {
            m.put("error", error);
        }
        if (note != null) {
            m.put("note", note);
        }
        return m;
    }
}
