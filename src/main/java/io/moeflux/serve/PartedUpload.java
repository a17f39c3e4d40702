package io.moeflux.serve;

import io.moeflux.connect.http.UploadSource;
import io.moeflux.connect.http.UploadSourceOptions;
import io.moeflux.connect.safetensors.SafetensorsSource;
import io.moeflux.hy3.ConversionLayout;
import io.moeflux.pipeline.CheckpointSink;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.PartedWrite;
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
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.IntStream;
import java.util.stream.Stream;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.Sinks;
import reactor.core.scheduler.Schedulers;

/**
 * One checkpoint uploaded in parts ({@code PUT /v1/checkpoints/{id}/parts/{part}?parts=N}), usually one per
 * rank of a training job, each holding pieces of tensors (a rank's DCP file) or whole tensors.
 *
 * <p>A part whose body breaks is dropped whole and can be sent again; a part that has arrived is final.
 * How parts arrive depends on whether the output can be laid out yet:
 * <ul>
 *   <li>With a manifest (every tensor's name, type and whole shape, declared first) and a sink that writes
 *       in parts (a folder), the output is laid out at once and each part streams from its socket straight
 *       into place as it arrives, converted on its own ({@link UploadConfig#convertPart}); the sink refuses a
 *       piece that overlaps another on arrival, takes back what a failing part wrote (so it can be sent
 *       again), and commits only when every tensor is covered.</li>
 *   <li>Otherwise a part is received whole into the spool first (see
 *       {@link io.moeflux.connect.http.PartReceiver}). Without a manifest nothing says a tensor's whole
 *       shape until every part is in, so the parts wait there; the last one to arrive opens them all as one
 *       sharded save (every tensor's pieces covering it exactly once, checked from the headers before a byte
 *       moves) and converts them into the sink, as {@code copy} or {@code from-hf} of a sharded save folder
 *       would. With a manifest but a sink of whole tensors (Kafka), or expert LoRA that from-hf regroups
 *       across parts, each arrived part flows into one write started at once.</li>
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

    /**
     * One attempt at receiving a part: ended (with the reason) when the checkpoint ends or its client goes, and
     * what {@link #dropped} is told, so that a late failure of one attempt never drops the next.
     */
    static final class Attempt {
        private final Sinks.Empty<Void> end = Sinks.empty();

        Mono<Void> ended() {
            return end.asMono();
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
    private final Map<Integer, Attempt> receiving = new TreeMap<>();
    /** With a manifest and a sink that writes in parts: the write parts stream into; else null. */
    private final PartedWrite partedWrite;
    /** With {@link #partedWrite}: the uploaded tensors that pass through unconverted, streamed from the socket into place. */
    private final Set<String> passThrough;
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
        PartedWrite inParts = null;
        Set<String> streamed = Set.of();
        RuntimeException refused = null;
        if (manifest.isPresent() && sink.placesPieces() && config.convertsInParts(manifest.get())) {
            try {
                ConversionLayout layout = config.layout(manifest.get());
                inParts = sink.writeInParts(config.descriptor().withTensors(layout.planned())).orElse(null);
                streamed = Set.copyOf(layout.passThrough().keySet());
            } catch (RuntimeException e) {
                refused = e;
            }
        }
        this.partedWrite = inParts;
        this.passThrough = streamed;
        if (refused != null) {
            committing(Mono.error(refused));
        } else if (manifest.isPresent() && partedWrite == null) {
            write(manifest.get(), arrivedParts.asFlux().concatMap(CheckpointSource::tensors, 1));
        }
    }

    /** Whether parts stream straight into place ({@link #stream}) rather than arriving whole first ({@link #arrived}). */
    boolean streams() {
        return partedWrite != null;
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
    synchronized Attempt begin(int part) {
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
        Attempt attempt = new Attempt();
        receiving.put(part, attempt);
        touch();
        return attempt;
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

    /** The attempt's body broke or was refused: the part is forgotten (nothing of it is kept) and may be sent again. */
    synchronized void dropped(int part, Attempt attempt) {
        receiving.remove(part, attempt);
        touch();
    }

    /**
     * The attempt's client has gone: a part streaming into place is ended, and dropped once the sink has
     * taken back what it wrote (a resend before then would overlap it); a part received into the spool is
     * dropped at once (its files go with the reception).
     */
    void clientGone(int part, Attempt attempt) {
        if (streams()) {
            attempt.end.tryEmitError(new Refused(HttpResponseStatus.BAD_REQUEST, "the client of part " + part + " has gone"));
        } else {
            dropped(part, attempt);
        }
    }

    /**
     * Streams {@code part} from {@code source} (its body) straight into place (see {@link #streams()}),
     * converted on its own; answers as {@link #arrived} does. A part whose body breaks or that the sink
     * refuses is taken back by the sink and dropped before the error is signalled, so it may be sent again
     * at once. Closes {@code source} when the part's write has ended.
     */
    Mono<Map<String, Object>> stream(int part, Attempt attempt, UploadSource source) {
        AtomicLong bytes = new AtomicLong();
        var delivery = new UploadSource.Delivery(passThrough::contains, true, Map.of(), manifest);
        Flux<TensorEvent> events = source.tensors(delivery).doOnNext(e -> bytes.addAndGet(e.tensor().byteSize()));
        Disposable cutting = attempt.ended().subscribe(null, source::cut);
        Sinks.One<Map<String, Object>> answer = Sinks.one();
        partedWrite.part(config.convertPart(events))
                .doFinally(signal -> {
                    cutting.dispose();
                    source.close();
                })
                .subscribe(null, error -> {
                    dropped(part, attempt);
                    answer.tryEmitError(error);
                }, () -> received(part, attempt, List.of(), bytes.get()).subscribe(answer::tryEmitValue, answer::tryEmitError));
        return answer.asMono();
    }

    /**
     * {@code part} has arrived whole as {@code files}: checked (a part whose headers are wrong is refused,
     * 400, and dropped), then kept. The answer is the checkpoint's status while parts are missing, or, for
     * the part that completes the set, its commit.
     */
    Mono<Map<String, Object>> arrived(int part, Attempt attempt, List<Path> files) {
        long bytes;
        Optional<CheckpointSource> source;
        try {
            bytes = SafetensorsSource.checkPieces(files);
            source = manifest.isPresent()
                    ? Optional.of(SafetensorsSource.openPieces(files, manifest, Optional.empty()))
                    : Optional.empty();
        } catch (IOException | RuntimeException e) {
            deleteQuietly(files);
            dropped(part, attempt);
            return Mono.error(e instanceof IOException io ? new UncheckedIOException(io) : e);
        }
        source.ifPresent(arrivedParts::tryEmitNext);
        return received(part, attempt, files, bytes);
    }

    /**
     * {@code part} is in ({@code files} in the spool, or written into place), {@code bytes} of tensor data:
     * kept, and, when it is the last, the checkpoint written or committed. Answers as {@link #arrived}.
     */
    private Mono<Map<String, Object>> received(int part, Attempt attempt, List<Path> files, long bytes) {
        boolean last;
        synchronized (this) {
            receiving.remove(part, attempt);
            if (phase != Phase.RECEIVING) {
                deleteQuietly(files);
                return Mono.error(new Refused(HttpResponseStatus.GONE, "checkpoint " + id + " ended while part " + part
                        + " was being received (" + status.state().json() + ")"));
            }
            arrived.put(part, files);
            bytesArrived += bytes;
            touch();
            last = arrived.size() == parts;
            if (last) {
                phase = Phase.COMMITTING;
            }
        }
        if (!last) {
            return Mono.just(status.toJson());
        }
        if (partedWrite != null) {
            committing(partedWrite.commit());
        } else if (manifest.isPresent()) {
            arrivedParts.tryEmitComplete();
        } else {
            try {
                List<Path> all = arrived.values().stream().flatMap(List::stream).toList();
                CheckpointSource whole = SafetensorsSource.openPieces(all, Optional.empty(), Optional.empty());
                write(whole.describe().block().tensors().orElseThrow(), whole.tensors());
            } catch (IOException | RuntimeException e) {
                committing(Mono.error(e instanceof IOException io ? new UncheckedIOException(io) : e));
            }
        }
        return committed.asMono().map(summary -> status.toJson());
    }

    /** Converts {@code uploaded} (the tensors {@code events} make whole) into the sink; the outcome ends the checkpoint. */
    private void write(List<TensorInfo> uploaded, Flux<TensorEvent> events) {
        // Deferred, so that a checkpoint the conversion refuses (missing experts) fails as a failed write does.
        committing(Mono.defer(() -> {
            ConversionLayout layout = config.layout(uploaded);
            // A sink of whole tensors (Kafka) gets each tensor once its pieces are gathered, in the spool's folder.
            Flux<TensorEvent> placed = sink.placesPieces() ? events
                    : events.transform(Stages.gatherPieces(SpillArea.in(folder, GATHER_IN_FILES_FROM)));
            return sink.write(config.descriptor().withTensors(layout.planned()), config.convert(placed, sink.placesPieces()));
        }));
    }

    /** The checkpoint's write or commit: its outcome ends the checkpoint. */
    private void committing(Mono<CommitSummary> outcome) {
        outcome.subscribe(summary -> {
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
        List<Attempt> cut;
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
        cut.forEach(attempt -> attempt.end.tryEmitError(gone));
        if (writeWaits && partedWrite != null) {
            // Parts still streaming stop at their next write; everything written goes with the abort.
            partedWrite.abort().subscribeOn(Schedulers.boundedElastic()).doFinally(signal -> deleteFolder()).subscribe();
        } else if (writeWaits) {
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
