package io.moeflux.cli;

import io.moeflux.pipeline.Progress;
import picocli.CommandLine.Option;

/** How a writing command lays out and places its output. */
final class WriteOptions {
    @Option(names = "--max-shard-size", paramLabel = "SIZE", converter = Converters.ByteSize.class,
            defaultValue = "5GB",
            description = "Bytes of tensor data per output file: 5GB (10^9, as Hugging Face), 500MB, 1GiB or plain bytes "
                    + "(default: ${DEFAULT-VALUE}).")
    long maxShardSize;

    @Option(names = "--force", description = "Replace a non-empty output (swapped in atomically at commit).")
    boolean force;

    @Option(names = "--no-sync", description = "Do not wait for the output to reach the disk before committing: "
            + "faster for scratch conversions, but a crash or power loss soon after can lose or tear it.")
    boolean noSync;

    Endpoints.SinkSettings settings() {
        return new Endpoints.SinkSettings(maxShardSize, force, !noSync, Progress.NONE);
    }
}
