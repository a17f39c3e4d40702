package io.moeflux.serve;

import io.moeflux.connect.http.UploadSourceOptions;
import io.moeflux.connect.safetensors.SafetensorsSource;
import io.moeflux.hy3.ConversionLayout;
import io.moeflux.pipeline.CheckpointSink;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.SpillArea;
import io.moeflux.tensor.TensorInfo;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.stream.IntStream;
import java.util.stream.Stream;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.Sinks;

/**
 * One checkpoint uploaded in parts ({@code PUT /v1/checkpoints/{id}/parts/{part}?parts=N}), usually one per
 * rank of a training job, each holding pieces of tensors (a rank's DCP file) or whole tensors.
 *
 * <p>A part is received whole into the spool before anything of it is used (see
 * {@link io.moeflux.connect.http.PartReceiver}), so a part whose body breaks is dropped whole and can be
 * sent again, and a part that has arrived is final. What happens to arrived parts depends on whether the
 * output can be laid out yet:
 * <ul>
 *   <li>Without a manifest nothing says a tensor's whole shape until every part is in, so the parts wait in
 *       the spool; the last one to arrive opens them all as one sharded save (every tensor's pieces
 *       covering it exactly once, checked from the headers before a byte moves) and converts them into
 *       the sink, as {@code copy} or {@code from-hf} of a sharded save folder would.</li>
 *   <li>With a manifest (every tensor's name, type and whole shape, declared first) the output is laid out
 *       at once and each part's pieces go into their place as soon as the part has arrived; the sink
 *       refuses a piece that overlaps another on arrival and commits only when every tensor is covered.</li>
 * </ul>
 * The checkpoint commits once, when all N parts have arrived and been written; it fails, committing
 * nothing and deleting its parts, on a torn set, after {@code --parts-timeout} without activity, or on
 * {@code DELETE}. Its methods are called from request threads and the timeout ticker: state changes hold
 * the instance's lock; conversions and writes run outside it.
 */
final class PartedUpload {
    private enum Phase {
        RECEIVING, COMMITTING, ENDED
    }

    /** A request this checkpoint turns away, with the HTTP status that says why. */
    static final class Refused extends RuntimeException {
        final HttpResponseStatus status;

        Refused(HttpResponseStatus status, String message) {
            super(message);
            this.status = status;
        }
    }

    /** Tensors of this many bytes and more are gathered from their pieces in a file of the spool, not in memory. */
    private static final long GATHER_IN_FILES_FROM = 1L << 20;

    private final String id;
    private final int parts;
    private final UploadConfig config;
    private final Optional<List<TensorInfo>> manifest;
    /** The declared checkpoint's tensor bytes, what coverage is a fraction of. */
    private final long manifestBytes;
    private final Path folder;
    private final UploadStatus status;
    private final CheckpointSink sink;
    private final Map<Integer, List<Path>> arrived = new TreeMap<>();
    /** Parts being received, each with what ends it if the checkpoint ends first. */
    private final Map<Integer, Sinks.Empty<Void>> receiving = new TreeMap<>();
    /** With a manifest: the arrived parts, flowing into the running write. */
    private final Sinks.Many<CheckpointSource> arrivedParts = Sinks.many().unicast().onBackpressureBuffer();
    private final Sinks.One<CommitSummary> committed = Sinks.one();
    /** Why the write failed, once it has. */
    private volatile Throwable failure;
    private Phase phase = Phase.RECEIVING;
    private long bytesArrived;
    private volatile long lastActivityNanos = System.nanoTime();

    /**
     * A checkpoint of {@code parts} parts spooled in {@code folder} (created here, deleted when it ends),
     * written to {@code sink} as {@code config} converts. With a {@code manifest}, the write starts now.
     */
    PartedUpload(String id, int parts, UploadConfig config, Optional<List<TensorInfo>> manifest, Path folder,
            UploadStatus status, CheckpointSink sink) throws IOException {
        this.id = id;
        this.parts = parts;
        this.config = config;
        this.manifest = manifest;
        this.manifestBytes = manifest.map(tensors -> tensors.stream().mapToLong(TensorInfo::byteSize).sum()).orElse(0L);
        this.folder = folder;
        this.status = status;
        this.sink = sink;
        Files.createDirectories(folder);
        if (manifest.isPresent()) {
            write(manifest.get(), arrivedParts.asFlux().concatMap(CheckpointSource::tensors, 1));
        }
    }

    int parts() {
        return parts;
    }

    /** Where the parts are spooled, one folder per checkpoint. */
    Path folder() {
        return folder;
    }

    /** Why the checkpoint's write failed, if it has (a manifest's write can fail as it starts: a committed id). */
    Optional<Throwable> failure() {
        return Optional.ofNullable(failure);
    }

    UploadStatus status() {
        return status;
    }

    /**
     * Admits {@code part} for receiving; returns what errors when the checkpoint ends before the part has
     * arrived. Throws {@link Refused} for a part out of range, one that arrived already (409: a client that
     * lost the first answer can take that as success) or is being received, or a checkpoint that has ended.
     */
    synchronized Mono<Void> begin(int part) {
        if (part < 0 || part >= parts) {
            throw new Refused(HttpResponseStatus.BAD_REQUEST, "part " + part + " is outside 0.." + (parts - 1)
                    + " of checkpoint " + id + "'s " + parts + " parts");
        }
        // Also while and after the checkpoint commits: the client that sent the last part may have lost its answer.
        boolean failed = status.state() == UploadStatus.State.FAILED || status.state() == UploadStatus.State.ABORTED;
        if (arrived.containsKey(part) && !failed) {
            throw new Refused(HttpResponseStatus.CONFLICT, "part " + part + " of checkpoint " + id + " has arrived already");
        }
        if (phase == Phase.ENDED) {
            // A committing checkpoint has all its parts (answered above); an ended one takes no more.
            throw new Refused(HttpResponseStatus.GONE, "checkpoint " + id + " has ended (" + status.state().json()
                    + "); upload it again, from its manifest or first part");
        }
        if (receiving.containsKey(part)) {
            throw new Refused(HttpResponseStatus.CONFLICT, "part " + part + " of checkpoint " + id + " is being received");
        }
        Sinks.Empty<Void> ended = Sinks.empty();
        receiving.put(part, ended);
        touch();
        return ended.asMono();
    }

    /** Counts a part's bytes as activity, and passes them on to the status. */
    UploadSourceOptions.Listener listener() {
        return new UploadSourceOptions.Listener() {
            @Override
            public void bytesReceived(long n) {
                touch();
                status.bytesReceived(n);
            }

            @Override
            public void bytesSpooled(long n) {
                status.bytesSpooled(n);
            }
        };
    }

    /** The part's body broke or was refused: it is forgotten (its files are gone) and may be sent again. */
    synchronized void dropped(int part) {
        receiving.remove(part);
        touch();
    }

    /**
     * {@code part} has arrived whole as {@code files}: checked (a part whose headers are wrong is refused,
     * 400, and dropped), then kept. The answer is the checkpoint's status while parts are missing, or, for
     * the part that completes the set, its commit.
     */
    Mono<Map<String, Object>> arrived(int part, List<Path> files) {
        long bytes;
        Optional<CheckpointSource> source;
        try {
            bytes = SafetensorsSource.checkPieces(files);
            source = manifest.isPresent()
                    ? Optional.of(SafetensorsSource.openPieces(files, manifest, Optional.empty()))
                    : Optional.empty();
        } catch (IOException | RuntimeException e) {
            deleteQuietly(files);
            dropped(part);
            return Mono.error(e instanceof IOException io ? new UncheckedIOException(io) : e);
        }
        boolean last;
        synchronized (this) {
            receiving.remove(part);
            if (phase != Phase.RECEIVING) {
                deleteQuietly(files);
                return Mono.error(new Refused(HttpResponseStatus.GONE, "checkpoint " + id + " ended while part " + part
                        + " was being received (" + status.state().json() + ")"));
            }
            arrived.put(part, files);
            bytesArrived += bytes;
            touch();
            source.ifPresent(arrivedParts::tryEmitNext);
            last = arrived.size() == parts;
            if (last) {
                phase = Phase.COMMITTING;
            }
        }
        if (!last) {
            return Mono.just(status.toJson());
        }
        if (manifest.isPresent()) {
            arrivedParts.tryEmitComplete();
        } else {
            try {
                List<Path> all = arrived.values().stream().flatMap(List::stream).toList();
                CheckpointSource whole = SafetensorsSource.openPieces(all, Optional.empty(), Optional.empty());
                write(whole.describe().block().tensors().orElseThrow(), whole.tensors());
            } catch (IOException | RuntimeException e) {
                status.failed(e.getMessage() != null ? e.getMessage() : e.toString());
                end();
                return Mono.error(e instanceof IOException io ? new UncheckedIOException(io) : e);
            }
        }
        return committed.asMono().map(summary -> status.toJson());
    }

    /** Converts {@code uploaded} (the tensors {@code events} make whole) into the sink; the outcome ends the checkpoint. */
    private void write(List<TensorInfo> uploaded, Flux<TensorEvent> events) {
        ConversionLayout layout = config.layout(uploaded);
        // A sink of whole tensors (Kafka) gets each tensor once its pieces are gathered, in the spool's folder.
        Flux<TensorEvent> placed = sink.placesPieces() ? events
                : events.transform(Stages.gatherPieces(SpillArea.in(folder, GATHER_IN_FILES_FROM)));
        sink.write(config.descriptor().withTensors(layout.planned()), config.convert(placed, sink.placesPieces()))
                .subscribe(summary -> {
                    status.committed(summary);
                    end();
                    committed.tryEmitValue(summary);
                }, error -> {
                    failure = error;
                    status.failed(error.getMessage() != null ? error.getMessage() : error.toString());
                    end();
                    committed.tryEmitError(error);
                });
    }

    /**
     * Fails the checkpoint if it is still receiving parts and none has started, arrived or sent a byte for
     * {@code timeout}; returns whether it did.
     */
    boolean expireIfIdle(Duration timeout) {
        String missing;
        synchronized (this) {
            if (phase != Phase.RECEIVING || System.nanoTime() - lastActivityNanos < timeout.toNanos()) {
                return false;
            }
            missing = missingParts();
        }
        if (status.failed("part" + (missing.contains(",") ? "s " : " ") + missing + " of " + parts
                + " did not arrive: no part was received for " + UploadStatus.duration(timeout)
                + " (--parts-timeout); nothing was committed")) {
            end();
        }
        return true;
    }

    /** {@code DELETE}: ends a checkpoint still receiving parts, committing nothing; refused once it commits. */
    Map<String, Object> delete() {
        synchronized (this) {
            if (phase == Phase.COMMITTING) {
                throw new Refused(HttpResponseStatus.CONFLICT, "checkpoint " + id + " has all its parts and is being committed");
            }
        }
        if (status.state() == UploadStatus.State.COMMITTED) {
            throw new Refused(HttpResponseStatus.CONFLICT, "checkpoint " + id + " is committed, and a committed checkpoint is never deleted");
        }
        if (status.aborted("deleted by DELETE /v1/checkpoints/" + id + " with " + arrivedCount() + " of " + parts
                + " parts arrived; nothing was committed")) {
            end();
        }
        return status.toJson();
    }

    private synchronized int arrivedCount() {
        return arrived.size();
    }

    /**
     * Ends the checkpoint, once its status says how: parts still being received are cut off, a write waiting
     * for parts is failed (its sink deletes its staging), and the spool folder goes once nothing reads it.
     */
    private void end() {
        List<Sinks.Empty<Void>> cut;
        boolean writeWaits;
        synchronized (this) {
            if (phase == Phase.ENDED) {
                return;
            }
            writeWaits = phase == Phase.RECEIVING && manifest.isPresent();
            phase = Phase.ENDED;
            cut = new ArrayList<>(receiving.values());
            receiving.clear();
        }
        Refused gone = new Refused(HttpResponseStatus.GONE, "checkpoint " + id + " has ended (" + status.state().json() + ")"
                + (status.error() != null ? ": " + status.error() : ""));
        cut.forEach(s -> s.tryEmitError(gone));
        if (writeWaits) {
            arrivedParts.tryEmitError(gone);
            committed.asMono().onErrorResume(e -> Mono.empty()).doFinally(signal -> deleteFolder()).subscribe();
        } else {
            deleteFolder();
        }
    }

    /** Parts neither arrived nor being received, as {@code 1, 3}. */
    private String missingParts() {
        return String.join(", ", IntStream.range(0, parts).filter(p -> !arrived.containsKey(p) && !receiving.containsKey(p))
                .mapToObj(Integer::toString).toList());
    }

    /** What GET adds to the status: the parts and how much of the checkpoint they cover. */
    synchronized Map<String, Object> partsJson() {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("parts", parts);
        m.put("parts_received", List.copyOf(arrived.keySet()));
        m.put("parts_receiving", List.copyOf(receiving.keySet()));
        Map<String, Object> coverage = new LinkedHashMap<>();
        coverage.put("bytes", bytesArrived);
        if (manifest.isPresent()) {
            coverage.put("of_bytes", manifestBytes);
            coverage.put("fraction", manifestBytes == 0 ? 1.0 : (double) bytesArrived / manifestBytes);
        }
        coverage.put("declared", manifest.isPresent());
        m.put("coverage", coverage);
        return m;
    }

    private void touch() {
        lastActivityNanos = System.nanoTime();
    }

    private void deleteFolder() {
        try {
            deleteTree(folder);
        } catch (IOException e) {
            // Unreadable or held: the next start of the service clears the spool's part folders.
        }
    }

    /** Deletes {@code folder} and everything in it, if it is there. */
    static void deleteTree(Path folder) throws IOException {
        if (!Files.exists(folder)) {
            return;
        }
        try (Stream<Path> files = Files.walk(folder)) {
            for (Path f : files.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(f);
            }
        }
    }

    private static void deleteQuietly(List<Path> files) {
        for (Path f : files) {
            try {
                Files.deleteIfExists(f);
            } catch (IOException ignored) {
                // Left for the folder's deletion.
            }
        }
    }
}
