package io.moeflux.cli;

import io.moeflux.connect.kafka.KafkaCheckpointSink;
import io.moeflux.connect.kafka.KafkaEndpoint;
import io.moeflux.connect.kafka.KafkaSinkOptions;
import io.moeflux.connect.safetensors.SafetensorsSink;
import io.moeflux.connect.safetensors.SafetensorsSinkOptions;
import io.moeflux.hy3.Hy3Options;
import io.moeflux.serve.CheckpointSinks;
import io.moeflux.serve.Direction;
import io.moeflux.serve.IngestOptions;
import io.moeflux.serve.IngestServer;
import java.io.IOException;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Optional;
import java.util.concurrent.Callable;
import java.util.regex.Pattern;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

@Command(name = "serve", header = "Run the HTTP ingest service that converts checkpoints streamed in while they are saved.",
        mixinStandardHelpOptions = true, versionProvider = Version.class, sortOptions = false,
        description = "A trainer streams a checkpoint with PUT /v1/checkpoints/{id}: safetensors blobs back to back, "
                + "chunked, any size. Each tensor is converted as it arrives, and the checkpoint is committed "
                + "atomically to SINK/{id} (or as checkpoint {id} on the Kafka topic) when the upload completes. "
                + "Also GET /v1/checkpoints/{id} (progress), "
                + "GET /healthz and GET /metrics (Prometheus). See README.md, section Live ingest (HTTP).")
final class ServeCommand implements Callable<Integer> {
    @Option(names = "--port", converter = Converters.Port.class, required = true, paramLabel = "P", description = "TCP port (0 picks a free one).")
    int port;

    @Option(names = "--bind", defaultValue = "127.0.0.1", paramLabel = "ADDR",
            description = "Address to listen on (default ${DEFAULT-VALUE}); anything but loopback wants --token-file.")
    String bind;

    @Option(names = "--sink", required = true, paramLabel = "DIR|kafka://HOST:PORT/TOPIC",
            description = "Folder that receives one checkpoint folder per upload id, or a Kafka topic that receives "
                    + "one checkpoint per upload id.")
    String sink;

    @Option(names = "--direction", required = true, paramLabel = "to-hf|from-hf|none",
            converter = DirectionConverter.class, description = "Conversion applied to every upload.")
    Direction direction;

    @Option(names = "--config", paramLabel = "FILE",
            description = "The model's config.json, for uploads whose query does not give num_hidden_layers, "
                    + "num_experts and moe_intermediate_size; stored with each checkpoint.")
    Path config;

    @Option(names = "--token-file", paramLabel = "FILE",
            description = "File holding a token every request must send as 'Authorization: Bearer <token>'.")
    Path tokenFile;

    @Option(names = "--exclude-key-regex", converter = Converters.Regex.class, paramLabel = "RE",
            description = "to-hf: drop output keys that start with a match of RE; an upload's exclude_key_regex "
                    + "query parameter replaces it.")
    Pattern excludeKeyRegex;

    @Option(names = "--lossy-lora", description = "from-hf: convert expert LoRA adapters exactly as the reference does, also where it drops tensors (an up_proj A that differs from gate_proj's, a layer whose LoRA groups are torn, per-expert LoRA given again in the fused form); without it such inputs are refused.")
    boolean lossyLora;

    @Option(names = "--allow-no-experts", description = "Convert an upload even when no tensor is an expert tensor of the input's "
            + "layout; by default that is refused, as it is usually a checkpoint of the other layout, which would pass "
            + "through unchanged.")
    boolean allowNoExperts;


    @Option(names = "--spool-dir", paramLabel = "DIR",
            description = "Where upload bodies are spooled while converting (default SINK/.moeflux-spool, or "
                    + "moeflux-spool in the temporary folder for a Kafka sink).")
    Path spoolDir;

    @Option(names = "--max-header-bytes", paramLabel = "SIZE", defaultValue = "" + IngestOptions.DEFAULT_MAX_HEADER_BYTES,
            converter = Converters.ByteSize.class,
            description = "Largest safetensors header accepted, refused before allocation: bytes, or with a unit such as 16MiB "
                    + "(default ${DEFAULT-VALUE} bytes).")
    long maxHeaderBytes;

    @Option(names = "--slab-memory", paramLabel = "SIZE", defaultValue = "" + IngestOptions.DEFAULT_SLAB_STAGING_BYTES,
            converter = Converters.ByteSizeOrZero.class,
            description = "Single-blob from-hf uploads: memory per upload for expert weights waiting for their slab's "
                    + "transposition, such as 256MiB; past it they are spooled; 0 spools all (default ${DEFAULT-VALUE} bytes).")
    long slabMemory;

    @Option(names = "--header-timeout", paramLabel = "TIME", defaultValue = "30s", converter = Converters.Timeout.class,
            description = "Close a connection whose request headers are not complete after TIME, also between requests "
                    + "(default ${DEFAULT-VALUE}).")
    Duration headerTimeout;

    @Option(names = "--body-idle-timeout", paramLabel = "TIME", defaultValue = "60s", converter = Converters.Timeout.class,
            description = "End an upload whose body sends nothing for TIME: nothing is committed and its id is free again "
                    + "(default ${DEFAULT-VALUE}). Keep it above the longest disk stall expected, as the service stops "
                    + "reading while its disk is behind.")
    Duration bodyIdleTimeout;

    @Option(names = "--parts-timeout", paramLabel = "TIME", defaultValue = "30m", converter = Converters.Timeout.class,
            description = "Fail a checkpoint uploaded in parts when none of its parts starts, arrives or sends a byte "
                    + "for TIME: nothing is committed and its parts leave the spool (default ${DEFAULT-VALUE}).")
    Duration partsTimeout;

    @Option(names = "--no-sync", description = "Answer an upload's 200 without waiting for its checkpoint to reach the "
            + "disk: for scratch services only, as a crash or power loss soon after can lose or tear a checkpoint "
            + "reported committed.")
    boolean noSync;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        IngestServer server = start();
        Runtime.getRuntime().addShutdownHook(new Thread(server::close, "moeflux-serve-shutdown"));
        server.awaitTermination();
        return ExitCodes.OK;
    }

    /** Starts the service as the options say and announces its address on stderr. */
    IngestServer start() throws IOException {
        CheckpointSinks sinks;
        Path defaultSpool;
        if (KafkaEndpoint.isKafka(sink)) {
            KafkaEndpoint topic = kafkaTopic();
            topic.requireReachable(Endpoints.BROKER_PROBE_TIMEOUT);
            sinks = (id, progress) -> KafkaCheckpointSink.create(KafkaSinkOptions.to(
                    new KafkaEndpoint(topic.bootstrapServers(), topic.topic(), Optional.of(id))).withProgress(progress));
            defaultSpool = Path.of(System.getProperty("java.io.tmpdir"), "moeflux-spool");
        } else {
            Path sinkDir = Path.of(sink);
            sinks = (id, progress) ->
                    SafetensorsSink.create(SafetensorsSinkOptions.to(sinkDir.resolve(id)).withDurable(!noSync)
                            .withProgress(progress));
            defaultSpool = sinkDir.resolve(".moeflux-spool");
        }
        IngestOptions options = IngestOptions.defaults(port, direction, sinks, spoolDir != null ? spoolDir : defaultSpool)
                .withBindHost(bind)
                .withMaxHeaderBytes(maxHeaderBytes)
                .withSlabStagingBytes(slabMemory)
                .withTimeouts(headerTimeout, bodyIdleTimeout)
                .withPartsTimeout(partsTimeout);
        if (config != null) {
            options = options.withConfigJson(Files.readAllBytes(config));
        }
        Hy3Options hy3 = Hy3Options.DEFAULTS.withLossyLora(lossyLora).withAllowNoExperts(allowNoExperts);
        options = options.withHy3Options(excludeKeyRegex != null ? hy3.withExcludeKeyRegex(excludeKeyRegex.pattern()) : hy3);
        if (tokenFile != null) {
            options = options.withToken(Files.readString(tokenFile, StandardCharsets.UTF_8));
        }
        PrintWriter err = spec.commandLine().getErr();
        if (tokenFile == null && !isLoopback(bind)) {
            err.println("warning: listening on " + bind + " without --token-file: anyone who can reach it can write checkpoints");
        }
        IngestServer server = IngestServer.start(options);
        err.println("moeflux serve: " + direction.cliName() + " into " + (KafkaEndpoint.isKafka(sink) ? sink
                : Path.of(sink).toAbsolutePath()) + ", listening on " + server.baseUri());
        err.flush();
        return server;
    }

    /** The topic of {@code --sink kafka://...}; each upload's id becomes its checkpoint id. */
    private KafkaEndpoint kafkaTopic() {
        KafkaEndpoint topic;
        try {
            topic = KafkaEndpoint.parse(sink);
        } catch (IllegalArgumentException e) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--sink: " + e.getMessage());
        }
        if (topic.checkpoint().isPresent()) {
            throw new CommandLine.ParameterException(spec.commandLine(), "--sink " + sink + " names a checkpoint, but "
                    + "each upload's id is its checkpoint id: leave out ?checkpoint=");
        }
        return topic;
    }

    private static boolean isLoopback(String host) {
        try {
            return InetAddress.getByName(host).isLoopbackAddress();
        } catch (UnknownHostException e) {
            return false;
        }
    }

    static final class DirectionConverter implements CommandLine.ITypeConverter<Direction> {
        @Override
        public Direction convert(String value) {
            try {
                return Direction.parse(value);
            } catch (IllegalArgumentException e) {
                throw new CommandLine.TypeConversionException(e.getMessage());
            }
        }
    }
}
