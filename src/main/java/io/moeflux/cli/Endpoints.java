package io.moeflux.cli;

import io.moeflux.connect.kafka.KafkaCheckpointSink;
import io.moeflux.connect.kafka.KafkaCheckpointSource;
import io.moeflux.connect.kafka.KafkaEndpoint;
import io.moeflux.connect.kafka.KafkaSinkOptions;
import io.moeflux.connect.kafka.KafkaSourceOptions;
import io.moeflux.connect.safetensors.SafetensorsSink;
import io.moeflux.connect.safetensors.SafetensorsSinkOptions;
import io.moeflux.connect.safetensors.SafetensorsSource;
import io.moeflux.pipeline.CheckpointSink;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.Progress;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import picocli.CommandLine;
import picocli.CommandLine.ParameterException;

/**
 * Turns the locations users type ({@code IN}, {@code OUT}, {@code SRC}, {@code DST}) into sources and
 * sinks. This is the one place that knows which kinds of location exist: a safetensors file or
 * folder, or a Kafka topic ({@code kafka://HOST:PORT[,HOST:PORT]/TOPIC[?checkpoint=ID[&part=R&parts=N]]}).
 */
final class Endpoints {
    private Endpoints() {}

    /**
     * How a command wants its output written; each sink takes what applies to it.
     *
     * @param maxShardSize bytes per output file (folders)
     * @param overwrite    replace a non-empty output ({@code --force})
     * @param durable      commit a folder only once it is on the device (not {@code --no-sync})
     * @param progress     told of every byte and tensor written
     */
    record SinkSettings(long maxShardSize, boolean overwrite, boolean durable, Progress progress) {
        static final SinkSettings DEFAULTS = new SinkSettings(SafetensorsSinkOptions.DEFAULT_MAX_SHARD_SIZE, false, true,
                Progress.NONE);

        SinkSettings withProgress(Progress p) {
            return new SinkSettings(maxShardSize, overwrite, durable, p);
        }
    }

    /**
     * Refuses an output folder that is the input, holds it or lies inside it (resolved through links):
     * committing with {@code --force} would replace the checkpoint being read, and an output inside the
     * input would be written into it.
     */
    static void requireApart(CommandLine commandLine, String in, String out) throws IOException {
        if (KafkaEndpoint.isKafka(in) || KafkaEndpoint.isKafka(out)) {
            return;
        }
        Path input = resolved(Path.of(in));
        Path output = resolved(Path.of(out));
        String relation = output.equals(input) ? "is" : input.startsWith(output) ? "contains" : output.startsWith(input) ? "is inside" : null;
        if (relation != null) {
            throw new ParameterException(commandLine, "the output " + out + " " + relation + " the input " + in
                    + ": choose an output folder outside it");
        }
    }

    /** The absolute path with every link in its existing part resolved; the part that does not exist yet kept as written. */
    private static Path resolved(Path p) throws IOException {
        Path absolute = p.toAbsolutePath().normalize();
        Path existing = absolute;
        while (existing != null && !Files.exists(existing)) {
            existing = existing.getParent();
        }
        return existing == null ? absolute : existing.toRealPath().resolve(existing.relativize(absolute));
    }

    /** How long the first look at a Kafka broker waits for it to answer: the clients would retry for minutes. */
    static final Duration BROKER_PROBE_TIMEOUT = Duration.ofSeconds(5);

    /** A {@code kafka://} location whose broker answers now, or an I/O error naming the address and why not. */
    static KafkaEndpoint reachable(String location) throws IOException {
        KafkaEndpoint endpoint = KafkaEndpoint.parse(location);
        endpoint.requireReachable(BROKER_PROBE_TIMEOUT);
        return endpoint;
    }

    /** Opens a checkpoint for reading; a file checkpoint's headers are validated here, before any data flows. */
    static CheckpointSource source(String location) throws IOException {
        if (KafkaEndpoint.isKafka(location)) {
            return KafkaCheckpointSource.create(KafkaSourceOptions.from(reachable(location))
                    .withWaiting(what -> {
                        System.err.println("moeflux: " + what);
                        System.err.flush();
                    }));
        }
        return SafetensorsSource.open(Path.of(location));
    }

    /**
     * What {@code copy} reads from {@code location} for {@code destination}: a file checkpoint published as one
     * part of a Kafka checkpoint is read as a part, its pieces without the other ranks' (a single rank's file
     * of a sharded save, or a whole save as one part); anything else as {@link #source}.
     */
    static CheckpointSource sourceFor(String location, String destination) throws IOException {
        if (!KafkaEndpoint.isKafka(location) && KafkaEndpoint.isKafka(destination)
                && KafkaEndpoint.parse(destination).part().isPresent()) {
            return SafetensorsSource.openPart(Path.of(location));
        }
        return source(location);
    }

    /** A sink that commits to {@code location}; a non-empty folder is refused at write time unless {@code overwrite}. */
    static CheckpointSink sink(String location, SinkSettings settings) {
        if (KafkaEndpoint.isKafka(location)) {
            try {
                return KafkaCheckpointSink.create(KafkaSinkOptions.to(reachable(location)).withProgress(settings.progress()));
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }
        return SafetensorsSink.create(SafetensorsSinkOptions.to(Path.of(location))
                .withMaxShardSize(settings.maxShardSize())
                .withOverwrite(settings.overwrite())
                .withDurable(settings.durable())
                .withProgress(settings.progress()));
    }
}
