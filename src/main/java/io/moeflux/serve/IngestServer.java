package io.moeflux.serve;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.moeflux.connect.HeaderTooLargeException;
import io.moeflux.connect.InsufficientSpaceException;
import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.connect.OutputExistsException;
import io.moeflux.connect.http.PartReceiver;
import io.moeflux.connect.http.UploadSource;
import io.moeflux.connect.http.UploadSourceOptions;
import io.moeflux.hy3.MissingExpertsException;
import io.moeflux.hy3.ConversionLayout;
import io.moeflux.pipeline.CheckpointSink;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.tensor.TensorInfo;
import io.netty.buffer.ByteBuf;
import io.netty.channel.AdaptiveRecvByteBufAllocator;
import io.netty.channel.ChannelOption;
import io.netty.handler.codec.http.HttpHeaderNames;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.handler.timeout.ReadTimeoutException;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.BindException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.security.MessageDigest;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executor;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.function.BiFunction;
import java.util.function.Supplier;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.reactivestreams.Publisher;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Scheduler;
import reactor.core.scheduler.Schedulers;
import reactor.netty.DisposableServer;
import reactor.netty.channel.AbortedException;
import reactor.netty.http.server.HttpServer;
import reactor.netty.http.server.HttpServerRequest;
import reactor.netty.http.server.HttpServerResponse;

/**
 * The HTTP ingest service: trainers stream checkpoints in with {@code PUT /v1/checkpoints/{id}}, each
 * converted on the fly and committed atomically to the sink.
 *
 * <p>Endpoints: {@code PUT} and {@code GET /v1/checkpoints/{id}} (upload; status and progress),
 * {@code PUT /v1/checkpoints/{id}/parts/{part}?parts=N} and {@code PUT /v1/checkpoints/{id}/manifest} (a
 * checkpoint uploaded in parts, see {@link PartedUpload}), {@code DELETE /v1/checkpoints/{id}} (ends one
 * uploaded in parts), {@code GET /healthz}, {@code GET /metrics} (Prometheus text).
 */
public final class IngestServer implements AutoCloseable {
    /**
     * Ids name folders and Kafka checkpoints: no separators; a letter, digit or underscore first (no
     * {@code ..}, no hidden spool names, nothing a shell takes for an option); then also {@code . : -},
     * as Kafka checkpoint ids allow.
     */
    private static final Pattern CHECKPOINT_ID = Pattern.compile("[A-Za-z0-9_][A-Za-z0-9._:-]{0,199}");
    private static final Pattern UPLOAD_PATH_PATTERN = Pattern.compile("/v1/checkpoints/[^/]+");
    private static final Pattern PARTED_PATH_PATTERN = Pattern.compile("/v1/checkpoints/[^/]+/(parts/[^/]+|manifest)");
    private static final String UPLOAD_PATH = "/v1/checkpoints/{id}";
    private static final String PART_PATH = "/v1/checkpoints/{id}/parts/{part}";
    private static final String MANIFEST_PATH = "/v1/checkpoints/{id}/manifest";
    /** The prefix of a multi-part checkpoint's folder in the spool. */
    private static final String PARTS_FOLDER = "parts-";
    /**
     * Socket reads grow up to this size under load, and body pieces are not split below it: with
     * Netty's defaults (8 KiB pieces, 64 KiB reads) per-piece overhead dominates a fast upload.
     */
    private static final int MAX_READ_BYTES = 1 << 20;
    /** Body pieces that may wait to be spooled, each at most {@link #MAX_READ_BYTES}: the memory bound per upload. */
    private static final int BODY_PREFETCH = 4;
    private static final int MAX_HTTP_HEADER_BYTES = 16 << 10;
    private static final int FINISHED_UPLOADS_KEPT = 1024;
    private static final String INVALID_ID = "invalid checkpoint id: use 1 to 200 of A-Z a-z 0-9 . _ : -,"
            + " starting with a letter, a digit or _";
    private static final ObjectMapper JSON = new ObjectMapper();

    private final IngestOptions options;
    private final IngestMetrics metrics = new IngestMetrics();
    /** Every upload's status by checkpoint id, the latest for each; changed only under its own lock. */
    private final Map<String, UploadStatus> uploads = new ConcurrentHashMap<>();
    /** Checkpoints uploaded in parts, by id; changed only under the lock of {@link #uploads}. */
    private final Map<String, PartedUpload> partedUploads = new ConcurrentHashMap<>();
    private final Disposable partsTimeouts;
    private final Optional<byte[]> expectedToken;
    private final DisposableServer server;
    /** Where bodies are spooled: one thread per upload while it has chunks to take (see {@link #bodyReader}). */
    private final ExecutorService bodyThreads = Executors.newCachedThreadPool(
            Thread.ofPlatform().name("moeflux-body-", 0).daemon().factory());
    private final Scheduler bodyReader = bodyReader(bodyThreads);
    /** Two headers of the largest size accepted: a third upload that sends one meanwhile gets 503. */
    private final HeaderBudget headerBudget;

    // maxChunkSize is deprecated because Netty 5 stops splitting bodies; Netty 4 still splits at 8 KiB without it.
    @SuppressWarnings("deprecation")
    private IngestServer(IngestOptions options) {
        this.options = options;
        this.headerBudget = new HeaderBudget(2 * options.maxHeaderBytes());
        this.expectedToken = options.token().map(t -> t.getBytes(StandardCharsets.UTF_8));
        try {
            Files.createDirectories(options.spoolDir());
            removeOldParts(options.spoolDir());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create the spool folder " + options.spoolDir(), e);
        }
        HttpServer http = HttpServer.create()
                .host(options.bindHost())
                .port(options.port())
                .httpRequestDecoder(spec -> spec.maxHeaderSize(MAX_HTTP_HEADER_BYTES).maxChunkSize(MAX_READ_BYTES))
                // A connection waiting for (the rest of) a request's headers, or whose upload body stops, is closed;
                // the upload then ends as aborted and its id is free for the retry.
                .idleTimeout(options.headerTimeout())
                .readTimeout(options.bodyIdleTimeout())
                .childOption(ChannelOption.RECVBUF_ALLOCATOR, new AdaptiveRecvByteBufAllocator(64, 64 << 10, MAX_READ_BYTES))
                .route(routes -> routes
                        .put(UPLOAD_PATH, authorized(this::upload))
                        .get(UPLOAD_PATH, authorized(this::status))
                        .delete(UPLOAD_PATH, authorized(this::delete))
                        .put(PART_PATH, authorized(this::part))
                        .put(MANIFEST_PATH, authorized(this::manifest))
                        .get("/healthz", authorized((req, res) -> afterRequest(req, () -> reply(res, HttpResponseStatus.OK, Map.of("status", "ok")))))
                        .head("/healthz", authorized((req, res) -> res.status(HttpResponseStatus.OK)
                                .header(HttpHeaderNames.CONTENT_LENGTH, "0").send()))
                        .get("/metrics", authorized(this::metrics))
                        .route(req -> true, IngestServer::notRouted));
        try {
            this.server = http.bindNow();
        } catch (RuntimeException e) {
            bodyThreads.shutdown();
            throw bindFailure(options, e);
        }
        Duration tick = options.partsTimeout().dividedBy(4).compareTo(Duration.ofSeconds(1)) < 0
                ? options.partsTimeout().dividedBy(4) : Duration.ofSeconds(1);
        this.partsTimeouts = Flux.interval(tick, Schedulers.parallel())
                .subscribe(t -> partedUploads.values().forEach(p -> p.expireIfIdle(options.partsTimeout())));
    }

    /**
     * Parts of checkpoints a previous run of the service was receiving: no client can complete them now (their
     * ids start afresh), so they go.
     */
    private static void removeOldParts(Path spool) throws IOException {
        try (Stream<Path> entries = Files.list(spool)) {
            for (Path folder : entries.filter(p -> p.getFileName().toString().startsWith(PARTS_FOLDER)).toList()) {
                PartedUpload.deleteTree(folder);
            }
        }
    }

    /** What a failed bind means for the one who chose the address: a busy port is named as such. */
    private static RuntimeException bindFailure(IngestOptions options, RuntimeException e) {
        for (Throwable c = e; c != null; c = c.getCause()) {
            if (c.getMessage() != null && c.getMessage().contains("Address already in use")) {
                return new UncheckedIOException(new BindException("port " + options.port() + " on " + options.bindHost()
                        + " is in use by another process"));
            }
        }
        return e;
    }

    /** Binds and starts serving; {@link #close()} stops. */
    public static IngestServer start(IngestOptions options) {
        return new IngestServer(options);
    }

    public int port() {
        return server.port();
    }

    /** {@code http://host:port}, for clients and log lines. */
    public String baseUri() {
        return "http://" + (options.bindHost().contains(":") ? "[" + options.bindHost() + "]" : options.bindHost()) + ":" + port();
    }

    /** Blocks until the server stops, for the CLI. */
    public void awaitTermination() {
        server.onDispose().block();
    }

    /** Stops listening and drops open connections; uploads in flight commit nothing. */
    @Override
    public void close() {
        partsTimeouts.dispose();
        server.disposeNow();
        bodyThreads.shutdown();
    }

    /**
     * Body chunks are spooled on {@code threads}, which cancelling an upload (a client gone) never
     * interrupts: a boundedElastic task is interrupted when cancelled, and an interrupt that lands in
     * {@code FileChannel.map} closes the spool file's channel and loses a mapping the kernel has
     * already made, which then stays for the life of the process. Cancelling stops the reader before
     * its next chunk instead. (Reactor treats an {@code ExecutorService} as one whose tasks it may
     * interrupt, hence the plain {@code Executor} view.)
     */
    static Scheduler bodyReader(Executor threads) {
        Executor plain = threads::execute;
        return Schedulers.fromExecutor(plain);
    }

    private BiFunction<HttpServerRequest, HttpServerResponse, Publisher<Void>> authorized(
            BiFunction<HttpServerRequest, HttpServerResponse, Mono<Void>> handler) {
        return (req, res) -> {
            if (expectedToken.isPresent()) {
                String given = req.requestHeaders().get(HttpHeaderNames.AUTHORIZATION, "");
                // The scheme is case-insensitive (RFC 9110); the token is compared in constant time.
                boolean bearer = given.regionMatches(true, 0, "Bearer ", 0, 7);
                byte[] token = (bearer ? given.substring(7).strip() : "").getBytes(StandardCharsets.UTF_8);
                if (!MessageDigest.isEqual(expectedToken.get(), token) || !bearer) {
                    res.header(HttpHeaderNames.WWW_AUTHENTICATE, "Bearer");
                    return error(res, HttpResponseStatus.UNAUTHORIZED, "missing or wrong bearer token");
                }
            }
            return handler.apply(req, res);
        };
    }

    /**
     * Runs {@code handler} with the request's checkpoint id and conversion (from its query, else the
     * service's options), or answers 400 naming what is wrong with them.
     */
    private Mono<Void> withCheckpoint(HttpServerRequest req, HttpServerResponse res,
            BiFunction<String, UploadConfig, Mono<Void>> handler) {
        String id = req.param("id");
        if (id == null || !CHECKPOINT_ID.matcher(id).matches()) {
            return refuse(req, res, HttpResponseStatus.BAD_REQUEST, INVALID_ID);
        }
        UploadConfig config;
        try {
            config = UploadConfig.resolve(options, new QueryStringDecoder(req.uri()).parameters());
        } catch (IllegalArgumentException | InvalidCheckpointException e) {
            return refuse(req, res, HttpResponseStatus.BAD_REQUEST, e.getMessage());
        }
        return handler.apply(id, config);
    }

    private Mono<Void> upload(HttpServerRequest req, HttpServerResponse res) {
        return withCheckpoint(req, res, (id, config) -> upload(id, config, req, res));
    }

    private Mono<Void> upload(String id, UploadConfig config, HttpServerRequest req, HttpServerResponse res) {
        UploadStatus status = begin(id);
        if (status == null) {
            return refuse(req, res, HttpResponseStatus.CONFLICT, "checkpoint " + id + " is being uploaded already");
        }
        CheckpointSink sink;
        try {
            sink = options.sinks().open(id, status);
        } catch (RuntimeException e) {
            status.failed("cannot open the sink: " + e.getMessage());
            return afterRequest(req, () -> reply(res, HttpResponseStatus.INTERNAL_SERVER_ERROR, status.toJson()));
        }
        // Buffers cross to a worker thread, so they are retained here and released once on file.
        Flux<ByteBuf> body = req.receive().retain().publishOn(bodyReader, BODY_PREFETCH);
        UploadSource source = UploadSource.create(body, new UploadSourceOptions(options.spoolDir(), options.maxHeaderBytes(),
                config.singleBlob(), headerBudget::reserve, status, options.slabStagingBytes()));
        // The same composition as a file conversion: the source describes (a single blob's header plans the
        // output), the conversion runs over its tensors, the sink writes them.
        Mono<CommitSummary> commit = source.describe().flatMap(described -> {
            boolean pieces = sink.placesPieces();
            if (described.tensors().isEmpty()) {
                var delivery = new UploadSource.Delivery(name -> false, pieces, Map.of());
                return sink.write(config.descriptor(), config.convert(source.tensors(delivery), pieces));
            }
            List<TensorInfo> uploaded = described.tensors().get();
            ConversionLayout layout = config.layout(uploaded);
            // What passes through unchanged goes from the socket straight into its place in the output; what the
            // conversion reads transposed waits in column blocks, the layout its transposition reads fastest.
            var delivery = new UploadSource.Delivery(pieces ? layout.passThrough()::containsKey : name -> false, pieces,
                    config.transposedInputs(uploaded));
            return sink.write(config.descriptor().withTensors(layout.planned()), config.convert(source.tensors(delivery), pieces));
        });
        return commit
                .doFinally(signal -> source.close())
                .flatMap(summary -> {
                    status.committed(summary);
                    return reply(res, HttpResponseStatus.OK, status.toJson());
                })
                .onErrorResume(e -> {
                    source.close();
                    if (isClientGone(e) || isIdle(e)) {
                        status.aborted(whyAborted(status));
                        return Mono.empty();
                    }
                    HttpResponseStatus code = statusFor(e);
                    if (e instanceof OutputExistsException) {
                        // Committed before (a folder sink never overwrites): what is on disk stays, and status says so.
                        status.foundCommitted(committedAlready(id));
                        return error(res, code, committedAlready(id));
                    }
                    status.failed(e.getMessage() != null ? e.getMessage() : e.toString());
                    if (code == HttpResponseStatus.SERVICE_UNAVAILABLE) {
                        res.header(HttpHeaderNames.RETRY_AFTER, "1");
                    }
                    return reply(res, code, status.toJson());
                })
                .doOnCancel(() -> status.aborted(whyAborted(status)));
    }

    private static String committedAlready(String id) {
        return "checkpoint " + id + " is committed already, and a committed checkpoint is never overwritten";
    }

    /**
     * A new upload's status, or null while another upload of the same id is running. Statuses of
     * finished uploads are kept for GET until more than {@link #FINISHED_UPLOADS_KEPT} pile up.
     */
    private UploadStatus begin(String id) {
        synchronized (uploads) {
            forgetFinished();
            UploadStatus old = uploads.get(id);
            if (old != null && old.state() == UploadStatus.State.RECEIVING) {
                return null;
            }
            UploadStatus created = new UploadStatus(id, metrics);
            uploads.put(id, created);
            return created;
        }
    }

    private void forgetFinished() {
        if (uploads.size() > FINISHED_UPLOADS_KEPT) {
            uploads.values().removeIf(u -> u.state() != UploadStatus.State.RECEIVING);
            partedUploads.values().removeIf(p -> p.status().state() != UploadStatus.State.RECEIVING);
        }
    }

    /**
     * The checkpoint {@code id} being uploaded in {@code parts} parts, begun now (by its manifest, when
     * {@code manifest} is given, or its first part) unless it is running; refused while a single upload of
     * the id runs, for a part count other than the checkpoint's, or for a manifest after its first part.
     */
    private PartedUpload parted(String id, int parts, UploadConfig config, Optional<List<TensorInfo>> manifest) {
        synchronized (uploads) {
            PartedUpload running = partedUploads.get(id);
            // A part sent to a checkpoint that has committed in parts goes to it, to be told it arrived: the client
            // of the part that completed the set may have lost its answer.
            boolean latest = running != null && uploads.get(id) == running.status();
            boolean committed = latest && running.status().state() == UploadStatus.State.COMMITTED && manifest.isEmpty();
            if (running != null && (running.status().state() == UploadStatus.State.RECEIVING || committed)) {
                if (manifest.isPresent()) {
                    throw new PartedUpload.Refused(HttpResponseStatus.CONFLICT, "checkpoint " + id
                            + " is being uploaded in parts already: declare its manifest before its first part");
                }
                if (running.parts() != parts) {
                    throw new PartedUpload.Refused(HttpResponseStatus.BAD_REQUEST, "checkpoint " + id + " has " + running.parts()
                            + " parts, as its first request said, but this one says parts=" + parts);
                }
                return running;
            }
            UploadStatus single = uploads.get(id);
            if (single != null && single.state() == UploadStatus.State.RECEIVING) {
                throw new PartedUpload.Refused(HttpResponseStatus.CONFLICT, "checkpoint " + id + " is being uploaded already");
            }
            forgetFinished();
            UploadStatus status = new UploadStatus(id, metrics);
            CheckpointSink sink;
            try {
                sink = options.sinks().open(id, status);
            } catch (RuntimeException e) {
                status.failed("cannot open the sink: " + e.getMessage());
                throw new PartedUpload.Refused(HttpResponseStatus.INTERNAL_SERVER_ERROR, "cannot open the sink: " + e.getMessage());
            }
            Path folder = options.spoolDir().resolve(PARTS_FOLDER + id + "-" + Long.toHexString(System.nanoTime()));
            PartedUpload created;
            try {
                created = new PartedUpload(id, parts, config, manifest, folder, status, sink);
            } catch (IOException e) {
                status.failed("cannot create " + folder + ": " + e.getMessage());
                throw new UncheckedIOException(e);
            }
            status.reportAlso(created::partsJson);
            uploads.put(id, status);
            partedUploads.put(id, created);
            return created;
        }
    }

    /** {@code PUT /v1/checkpoints/{id}/parts/{part}?parts=N}: one part, received whole, then kept or committed. */
    private Mono<Void> part(HttpServerRequest req, HttpServerResponse res) {
        return withCheckpoint(req, res, (id, config) -> part(id, config, req, res));
    }

    private Mono<Void> part(String id, UploadConfig config, HttpServerRequest req, HttpServerResponse res) {
        int part;
        int parts;
        try {
            parts = count(new QueryStringDecoder(req.uri()).parameters().getOrDefault("parts", List.of()), "parts", 1);
            part = count(List.of(req.param("part")), "the part number", 0);
        } catch (IllegalArgumentException e) {
            return refuse(req, res, HttpResponseStatus.BAD_REQUEST, e.getMessage());
        }
        PartedUpload upload;
        PartedUpload.Attempt attempt;
        try {
            upload = parted(id, parts, config, Optional.empty());
            attempt = upload.begin(part);
        } catch (PartedUpload.Refused e) {
            return refuse(req, res, e.status, e.getMessage());
        }
        Flux<ByteBuf> body = req.receive().retain().publishOn(bodyReader, BODY_PREFETCH);
        var sourceOptions = new UploadSourceOptions(options.spoolDir(), options.maxHeaderBytes(), false, headerBudget::reserve,
                upload.listener(), 0);
        Mono<Map<String, Object>> answer;
        if (upload.streams()) {
            answer = upload.stream(part, attempt, UploadSource.create(body, sourceOptions));
        } else {
            Mono<List<Path>> received = PartReceiver.receive(body, upload.folder(), String.format("part-%05d", part), sourceOptions);
            answer = Mono.firstWithSignal(received, attempt.ended().then(Mono.<List<Path>>never()))
                    .flatMap(files -> upload.arrived(part, attempt, files));
        }
        return answer
                .flatMap(json -> reply(res, HttpResponseStatus.OK, json))
                .onErrorResume(e -> {
                    upload.dropped(part, attempt);
                    if (e instanceof PartedUpload.Refused r) {
                        return error(res, r.status, r.getMessage());
                    }
                    if (isClientGone(e) || isIdle(e)) {
                        return Mono.empty();
                    }
                    HttpResponseStatus code = statusFor(e);
                    String message = e.getMessage() != null ? e.getMessage() : e.toString();
                    if (upload.status().state() != UploadStatus.State.RECEIVING) {
                        // The commit failed: the checkpoint's status says why.
                        return reply(res, code, upload.status().toJson());
                    }
                    return error(res, code, "part " + part + " of checkpoint " + id + " was dropped: " + message
                            + (code.code() < 500 ? "" : "; send it again"));
                })
                .doOnCancel(() -> upload.clientGone(part, attempt));
    }

    /** {@code PUT /v1/checkpoints/{id}/manifest}: declares a checkpoint's tensors and parts before its first part. */
    private Mono<Void> manifest(HttpServerRequest req, HttpServerResponse res) {
        return withCheckpoint(req, res, (id, config) -> manifest(id, config, req, res));
    }

    private Mono<Void> manifest(String id, UploadConfig config, HttpServerRequest req, HttpServerResponse res) {
        return req.receive().aggregate().asByteArray().defaultIfEmpty(new byte[0])
                .flatMap(bytes -> {
                    PartsManifest manifest;
                    try {
                        manifest = PartsManifest.parse(bytes, options.maxHeaderBytes());
                    } catch (InvalidCheckpointException e) {
                        return error(res, HttpResponseStatus.BAD_REQUEST, e.getMessage());
                    }
                    PartedUpload upload;
                    try {
                        upload = parted(id, manifest.parts(), config, Optional.of(manifest.tensors()));
                    } catch (PartedUpload.Refused e) {
                        return error(res, e.status, e.getMessage());
                    }
                    Optional<Throwable> failed = upload.failure();
                    if (failed.isPresent()) {
                        HttpResponseStatus code = statusFor(failed.get());
                        return failed.get() instanceof OutputExistsException ? error(res, code, committedAlready(id))
                                : reply(res, code, upload.status().toJson());
                    }
                    return reply(res, HttpResponseStatus.OK, upload.status().toJson());
                });
    }

    /** {@code DELETE /v1/checkpoints/{id}}: ends a checkpoint being uploaded in parts, committing nothing. */
    private Mono<Void> delete(HttpServerRequest req, HttpServerResponse res) {
        return afterRequest(req, () -> deleteParted(req.param("id"), res));
    }

    private Mono<Void> deleteParted(String id, HttpServerResponse res) {
        UploadStatus latest = uploads.get(id);
        PartedUpload upload = partedUploads.get(id);
        if (latest == null) {
            return error(res, HttpResponseStatus.NOT_FOUND, "no upload of checkpoint " + id + " since the service started");
        }
        if (upload == null || upload.status() != latest) {
            return error(res, HttpResponseStatus.CONFLICT, latest.state() == UploadStatus.State.RECEIVING
                    ? "checkpoint " + id + " is uploaded in one PUT, which ends when its connection closes"
                    : "checkpoint " + id + " is not being uploaded in parts (" + latest.state().json() + ")");
        }
        try {
            return reply(res, HttpResponseStatus.OK, upload.delete());
        } catch (PartedUpload.Refused e) {
            return error(res, e.status, e.getMessage());
        }
    }

    /** A count given as a path segment or query parameter: a whole number of at least {@code min}. */
    private static int count(List<String> values, String what, int min) {
        if (values.size() != 1) {
            throw new IllegalArgumentException(what + " must be given once" + (what.equals("parts") ? ", as ?parts=N" : ""));
        }
        try {
            int n = Integer.parseInt(values.getFirst());
            if (n >= min) {
                return n;
            }
        } catch (NumberFormatException e) {
            // Reported below, naming what was given.
        }
        throw new IllegalArgumentException(what + " must be a whole number from " + min + ", got \"" + values.getFirst() + "\"");
    }

    /** A known path with a method it does not take is 405 with the methods it does; anything else 404, in JSON. */
    private static Mono<Void> notRouted(HttpServerRequest req, HttpServerResponse res) {
        String path = new QueryStringDecoder(req.uri()).path();
        String allowed = UPLOAD_PATH_PATTERN.matcher(path).matches() ? "GET, PUT, DELETE"
                : PARTED_PATH_PATTERN.matcher(path).matches() ? "PUT"
                : path.equals("/healthz") ? "GET, HEAD"
                : path.equals("/metrics") ? "GET" : null;
        if (allowed == null) {
            return error(res, HttpResponseStatus.NOT_FOUND, "no endpoint " + path + ": see /v1/checkpoints/{id}, "
                    + "/v1/checkpoints/{id}/parts/{part}, /v1/checkpoints/{id}/manifest, /healthz, /metrics");
        }
        res.header(HttpHeaderNames.ALLOW, allowed);
        return error(res, HttpResponseStatus.METHOD_NOT_ALLOWED, req.method() + " is not allowed on " + path + "; use " + allowed);
    }

    /**
     * Why an upload whose connection went away ended: its body idled past {@code --body-idle-timeout}
     * (the service closed the connection), or the client left. Which error or cancellation reports the
     * close depends on timing, so the body's silence decides.
     */
    private String whyAborted(UploadStatus status) {
        return status.sinceLastByte().compareTo(options.bodyIdleTimeout()) >= 0
                ? "no byte of the body arrived for " + options.bodyIdleTimeout().toMillis()
                        + " ms (--body-idle-timeout); nothing was committed"
                : "the client went away before the upload completed; nothing was committed";
    }

    /** The connection was closed for its body idling past {@code --body-idle-timeout}. */
    private static boolean isIdle(Throwable e) {
        for (Throwable c = e; c != null; c = c.getCause()) {
            if (c instanceof ReadTimeoutException) {
                return true;
            }
        }
        return false;
    }

    private static boolean isClientGone(Throwable e) {
        return e instanceof AbortedException || AbortedException.isConnectionReset(e);
    }

    private static HttpResponseStatus statusFor(Throwable e) {
        // The sink wraps what the file system says (UncheckedIOException and the like).
        for (Throwable c = e; c != null; c = c.getCause()) {
            // Reserved up front (a planned checkpoint), or found out by a write or the spool (ENOSPC).
            if (c instanceof InsufficientSpaceException
                    || (c instanceof IOException && c.getMessage() != null && c.getMessage().contains("No space left on device"))) {
                return HttpResponseStatus.INSUFFICIENT_STORAGE;
            }
        }
        if (e instanceof HeaderTooLargeException) {
            return HttpResponseStatus.REQUEST_ENTITY_TOO_LARGE;
        }
        if (e instanceof ServiceBusyException) {
            return HttpResponseStatus.SERVICE_UNAVAILABLE;
        }
        if (e instanceof InvalidCheckpointException) {
            return HttpResponseStatus.BAD_REQUEST;
        }
        if (e instanceof MissingExpertsException || e instanceof IllegalArgumentException) {
            return HttpResponseStatus.UNPROCESSABLE_ENTITY;
        }
        if (e instanceof OutputExistsException) {
            return HttpResponseStatus.CONFLICT;
        }
        return HttpResponseStatus.INTERNAL_SERVER_ERROR;
    }

    private Mono<Void> status(HttpServerRequest req, HttpServerResponse res) {
        return afterRequest(req, () -> {
            UploadStatus status = uploads.get(req.param("id"));
            return status == null
                    ? error(res, HttpResponseStatus.NOT_FOUND, "no upload of checkpoint " + req.param("id") + " since the service started")
                    : reply(res, HttpResponseStatus.OK, status.toJson());
        });
    }

    /**
     * {@code answer}, once the request has been received to its end (its body, if any, read and dropped).
     * Answering a request before its end has been read left the connection unread now and then (reactor-netty
     * 1.2), so the next request on a kept-alive connection waited forever; closing the connection instead
     * cuts off a client still sending its body before it reads the answer.
     */
    private static Mono<Void> afterRequest(HttpServerRequest req, Supplier<Mono<Void>> answer) {
        return req.receive().then(Mono.defer(answer));
    }

    /** Refuses a request whose body has not been read, once it has arrived (see {@link #afterRequest}). */
    private static Mono<Void> refuse(HttpServerRequest req, HttpServerResponse res, HttpResponseStatus code, String message) {
        return afterRequest(req, () -> error(res, code, message));
    }

    private Mono<Void> metrics(HttpServerRequest req, HttpServerResponse res) {
        return afterRequest(req, () -> {
            byte[] text = metrics.scrape().getBytes(StandardCharsets.UTF_8);
            return res.status(HttpResponseStatus.OK)
                    .header(HttpHeaderNames.CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
                    .header(HttpHeaderNames.CONTENT_LENGTH, Integer.toString(text.length))
                    .sendByteArray(Mono.just(text))
                    .then();
        });
    }

    private static Mono<Void> error(HttpServerResponse res, HttpResponseStatus code, String message) {
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("error", message);
        return reply(res, code, body);
    }

    private static Mono<Void> reply(HttpServerResponse res, HttpResponseStatus code, Map<String, Object> body) {
        byte[] json;
        try {
            json = JSON.writeValueAsBytes(body);
        } catch (JsonProcessingException e) {
            return Mono.error(e);
        }
        return res.status(code)
                .header(HttpHeaderNames.CONTENT_TYPE, "application/json")
                .header(HttpHeaderNames.CONTENT_LENGTH, Integer.toString(json.length))
                .sendByteArray(Mono.just(json))
                .then();
    }
}
