package io.moeflux.serve;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.moeflux.connect.HeaderTooLargeException;
import io.moeflux.connect.InsufficientSpaceException;
import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.connect.OutputExistsException;
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
import java.util.regex.Pattern;
import org.reactivestreams.Publisher;
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
 * {@code GET /healthz}, {@code GET /metrics} (Prometheus text).
 */
public final class IngestServer implements AutoCloseable {
    /**
     * Ids name folders and Kafka checkpoints: no separators; a letter, digit or underscore first (no
     * {@code ..}, no hidden spool names, nothing a shell takes for an option); then also {@code . : -},
     * as Kafka checkpoint ids allow.
     */
    private static final Pattern CHECKPOINT_ID = Pattern.compile("[A-Za-z0-9_][A-Za-z0-9._:-]{0,199}");
    private static final Pattern UPLOAD_PATH_PATTERN = Pattern.compile("/v1/checkpoints/[^/]+");
    private static final String UPLOAD_PATH = "/v1/checkpoints/{id}";
    /**
     * Socket reads grow up to this size under load, and body pieces are not split below it: with
     * Netty's defaults (8 KiB pieces, 64 KiB reads) per-piece overhead dominates a fast upload.
     */
    private static final int MAX_READ_BYTES = 1 << 20;
    /** Body pieces that may wait to be spooled, each at most {@link #MAX_READ_BYTES}: the memory bound per upload. */
    private static final int BODY_PREFETCH = 4;
    private static final int MAX_HTTP_HEADER_BYTES = 16 << 10;
    private static final int FINISHED_UPLOADS_KEPT = 1024;
    private static final ObjectMapper JSON = new ObjectMapper();

    private final IngestOptions options;
    private final IngestMetrics metrics = new IngestMetrics();
    private final Map<String, UploadStatus> uploads = new ConcurrentHashMap<>();
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
                        .get("/healthz", authorized((req, res) -> reply(res, HttpResponseStatus.OK, Map.of("status", "ok"))))
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

    private Mono<Void> upload(HttpServerRequest req, HttpServerResponse res) {
        String id = req.param("id");
        if (id == null || !CHECKPOINT_ID.matcher(id).matches()) {
            return error(res, HttpResponseStatus.BAD_REQUEST, "invalid checkpoint id: use 1 to 200 of A-Z a-z 0-9 . _ : -,"
                    + " starting with a letter, a digit or _");
        }
        UploadConfig config;
        try {
            config = UploadConfig.resolve(options, new QueryStringDecoder(req.uri()).parameters());
        } catch (IllegalArgumentException | InvalidCheckpointException e) {
            return error(res, HttpResponseStatus.BAD_REQUEST, e.getMessage());
        }
        UploadStatus status = begin(id);
        if (status == null) {
            return error(res, HttpResponseStatus.CONFLICT, "checkpoint " + id + " is being uploaded already");
        }
        CheckpointSink sink;
        try {
            sink = options.sinks().open(id, status);
        } catch (RuntimeException e) {
            status.failed("cannot open the sink: " + e.getMessage());
            return reply(res, HttpResponseStatus.INTERNAL_SERVER_ERROR, status.toJson());
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
        if (uploads.size() > FINISHED_UPLOADS_KEPT) {
            uploads.values().removeIf(u -> u.state() != UploadStatus.State.RECEIVING);
        }
        UploadStatus[] created = {null};
        uploads.compute(id, (k, old) -> {
            if (old != null && old.state() == UploadStatus.State.RECEIVING) {
                return old;
            }
            created[0] = new UploadStatus(id, metrics);
            return created[0];
        });
        return created[0];
    }

    /** A known path with a method it does not take is 405 with the methods it does; anything else 404, in JSON. */
    private static Mono<Void> notRouted(HttpServerRequest req, HttpServerResponse res) {
        String path = new QueryStringDecoder(req.uri()).path();
        String allowed = UPLOAD_PATH_PATTERN.matcher(path).matches() ? "GET, PUT"
                : path.equals("/healthz") ? "GET, HEAD"
                : path.equals("/metrics") ? "GET" : null;
        if (allowed == null) {
            return error(res, HttpResponseStatus.NOT_FOUND, "no endpoint " + path + ": see /v1/checkpoints/{id}, /healthz, /metrics");
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
        UploadStatus status = uploads.get(req.param("id"));
        return status == null
                ? error(res, HttpResponseStatus.NOT_FOUND, "no upload of checkpoint " + req.param("id") + " since the service started")
                : reply(res, HttpResponseStatus.OK, status.toJson());
    }

    private Mono<Void> metrics(HttpServerRequest req, HttpServerResponse res) {
        byte[] text = metrics.scrape().getBytes(StandardCharsets.UTF_8);
        return res.status(HttpResponseStatus.OK)
                .header(HttpHeaderNames.CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
                .header(HttpHeaderNames.CONTENT_LENGTH, Integer.toString(text.length))
                .sendByteArray(Mono.just(text))
                .then();
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
