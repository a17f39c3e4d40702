package io.moeflux.serve;

import io.moeflux.connect.safetensors.SafetensorsFormat;
import io.moeflux.hy3.Hy3Options;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Objects;
import java.util.Optional;

/**
 * How the ingest service listens, converts and stores.
 *
 * @param bindHost       the address to listen on; loopback unless the service must be reachable from
 *                       elsewhere, and then only together with {@code token}
 * @param port           the TCP port; 0 picks a free one
 * @param direction      the conversion every upload goes through
 * @param sinks          where each checkpoint goes
 * @param spoolDir       where upload bodies are spooled while their tensors are converted: it needs free
 *                       space for the blobs in flight (a whole shard, when shards are uploaded as one blob
 *                       each); on the sink's file system the page cache serves both
 * @param configJson     the model's {@code config.json}, for every upload that does not give the model
 *                       config in its query; stored with each checkpoint
 * @param hy3Options     conversion options; an upload's {@code exclude_key_regex} query parameter replaces
 *                       the exclusion pattern
 * @param token          when present, every request must carry {@code Authorization: Bearer <token>}
 * @param maxHeaderBytes the largest safetensors header accepted, refused before anything is allocated for
 *                       it; at most the format's own 100,000,000. Each running upload may hold one header
 *                       of this size on the heap while it parses it, so tune it together with the heap
 *                       and the number of concurrent uploads expected
 * @param slabStagingBytes memory per running single-blob from-hf upload for expert weights: each waits there,
 *                       in column blocks as wide as its transposition's tiles, for the rest of its expert's
 *                       slab and for the slab's write. When it is used up by slabs that have all their
 *                       weights, the upload stops reading its socket until one is written; when it is used
 *                       up by weights waiting for their partners (an upload that sends all gates, then all
 *                       ups), further weights are spooled instead. The default holds five Hy3 weights of
 *                       12.6 MB; 0 spools them all
 * @param headerTimeout  how long a connection may wait for a request's HTTP headers to be complete (between
 *                       requests too): a client that opens connections and sends nothing, or half a request,
 *                       is cut off after it
 * @param bodyIdleTimeout how long an upload's body may go without a byte arriving; the upload then ends as
 *                       aborted and its id is free again. The service also stops reading while its disk is
 *                       behind (backpressure), so keep it well above the longest write stall expected
 * @param partsTimeout   how long a checkpoint uploaded in parts may go without any of its parts starting,
 *                       arriving or sending a byte before it fails, nothing committed and its parts deleted
 *                       from the spool
 */
public record IngestOptions(
        String bindHost,
        int port,
        Direction direction,
        CheckpointSinks sinks,
        Path spoolDir,
        Optional<byte[]> configJson,
        Hy3Options hy3Options,
        Optional<String> token,
        long maxHeaderBytes,
        long slabStagingBytes,
        Duration headerTimeout,
        Duration bodyIdleTimeout,
        Duration partsTimeout) {
    /** Enough for the header of a whole Hy3-preview checkpoint in one file. */
    public static final long DEFAULT_MAX_HEADER_BYTES = 16L << 20;
    /** Five weights of one Hy3 expert (12.6 MB each): one expert's slabs are written while the next one's arrive. */
    public static final long DEFAULT_SLAB_STAGING_BYTES = 64L << 20;
    public static final Duration DEFAULT_HEADER_TIMEOUT = Duration.ofSeconds(30);
    public static final Duration DEFAULT_BODY_IDLE_TIMEOUT = Duration.ofSeconds(60);
    public static final Duration DEFAULT_PARTS_TIMEOUT = Duration.ofMinutes(30);

    public IngestOptions {
        Objects.requireNonNull(bindHost, "bindHost");
        Objects.requireNonNull(direction, "direction");
        Objects.requireNonNull(sinks, "sinks");
        Objects.requireNonNull(spoolDir, "spoolDir");
        Objects.requireNonNull(hy3Options, "hy3Options");
        configJson = configJson.map(byte[]::clone);
        token = token.map(String::strip);
        if (port < 0 || port > 65535) {
            throw new IllegalArgumentException("port must be in [0, 65535], got " + port);
        }
        if (maxHeaderBytes < 2 || maxHeaderBytes > SafetensorsFormat.MAX_HEADER_SIZE) {
            throw new IllegalArgumentException("max header bytes must be in [2, 100000000], got " + maxHeaderBytes);
        }
        if (slabStagingBytes < 0) {
            throw new IllegalArgumentException("slab staging bytes must not be negative, got " + slabStagingBytes);
        }
        if (!headerTimeout.isPositive() || !bodyIdleTimeout.isPositive() || !partsTimeout.isPositive()) {
            throw new IllegalArgumentException("timeouts must be positive, got " + headerTimeout + ", " + bodyIdleTimeout
                    + " and " + partsTimeout);
        }
        if (token.isPresent() && token.get().isEmpty()) {
            throw new IllegalArgumentException("the token is empty");
        }
    }

    /** Loopback, no token, no model config, default options: add what the deployment needs with the withers. */
    public static IngestOptions defaults(int port, Direction direction, CheckpointSinks sinks, Path spoolDir) {
        return new IngestOptions("127.0.0.1", port, direction, sinks, spoolDir, Optional.empty(), Hy3Options.DEFAULTS,
                Optional.empty(), DEFAULT_MAX_HEADER_BYTES, DEFAULT_SLAB_STAGING_BYTES, DEFAULT_HEADER_TIMEOUT,
                DEFAULT_BODY_IDLE_TIMEOUT, DEFAULT_PARTS_TIMEOUT);
    }

    public IngestOptions withBindHost(String host) {
        return new IngestOptions(host, port, direction, sinks, spoolDir, configJson, hy3Options, token,
                maxHeaderBytes, slabStagingBytes, headerTimeout, bodyIdleTimeout, partsTimeout);
    }

    public IngestOptions withConfigJson(byte[] json) {
        return new IngestOptions(bindHost, port, direction, sinks, spoolDir, Optional.of(json), hy3Options, token,
                maxHeaderBytes, slabStagingBytes, headerTimeout, bodyIdleTimeout, partsTimeout);
    }

    public IngestOptions withHy3Options(Hy3Options options) {
        return new IngestOptions(bindHost, port, direction, sinks, spoolDir, configJson, options, token,
                maxHeaderBytes, slabStagingBytes, headerTimeout, bodyIdleTimeout, partsTimeout);
    }

    public IngestOptions withToken(String t) {
        return new IngestOptions(bindHost, port, direction, sinks, spoolDir, configJson, hy3Options, Optional.of(t),
                maxHeaderBytes, slabStagingBytes, headerTimeout, bodyIdleTimeout, partsTimeout);
    }

    public IngestOptions withMaxHeaderBytes(long max) {
        return new IngestOptions(bindHost, port, direction, sinks, spoolDir, configJson, hy3Options, token,
                max, slabStagingBytes, headerTimeout, bodyIdleTimeout, partsTimeout);
    }

    public IngestOptions withSlabStagingBytes(long bytes) {
        return new IngestOptions(bindHost, port, direction, sinks, spoolDir, configJson, hy3Options, token,
                maxHeaderBytes, bytes, headerTimeout, bodyIdleTimeout, partsTimeout);
    }

    public IngestOptions withTimeouts(Duration header, Duration bodyIdle) {
        return new IngestOptions(bindHost, port, direction, sinks, spoolDir, configJson, hy3Options, token, maxHeaderBytes,
                slabStagingBytes, header, bodyIdle, partsTimeout);
    }

    public IngestOptions withPartsTimeout(Duration timeout) {
        return new IngestOptions(bindHost, port, direction, sinks, spoolDir, configJson, hy3Options, token, maxHeaderBytes,
                slabStagingBytes, headerTimeout, bodyIdleTimeout, timeout);
    }

    @Override
    public Optional<byte[]> configJson() {
        return configJson.map(byte[]::clone);
    }
}
