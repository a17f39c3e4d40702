package io.moeflux.cli;

import io.moeflux.pipeline.Progress;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/** How a writing command lays out and places its output. */
final class WriteOptions {
    @Option(names = "--max-shard-size", paramLabel = "SIZE", converter = Converters.ByteSize.class,
            defaultValue = "5GB",
            description = "Bytes of tensor data per output file: 5GB (10^9, as Hugging Face), 500MB, 1GiB or plain bytes "
                    + "(default: ${DEFAULT-VALUE}; copy of a sharded save with .hf_metadata/fqn_to_file_index_mapping.json "
                    + "follows that file instead unless this is given).")
    long maxShardSize;

    @Spec(Spec.Target.MIXEE)
    CommandSpec command;

    @Option(names = "--force", description = "Replace a non-empty output (swapped in atomically at commit).")
    boolean force;

    @Option(names = "--no-sync", description = "Do not wait for the output to reach the disk before committing: "
            + "faster for scratch conversions, but a crash or power loss soon after can lose or tear it.")
    boolean noSync;

    /** Whether the user chose the shard size, rather than taking the default. */
    boolean shardSizeGiven() {
        return command.commandLine().getParseResult().hasMatchedOption("--max-shard-size");
    }

    Endpoints.SinkSettings settings() {
        return new Endpoints.SinkSettings(maxShardSize, force, !noSync, Progress.NONE);
    }
}
