package io.moeflux.cli;

import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

@Command(name = "copy", header = "Copy a checkpoint unchanged (re-sharded, atomic).",
        mixinStandardHelpOptions = true, versionProvider = Version.class, sortOptions = false,
        description = "Copies a checkpoint without converting it: same tensors, same bytes, laid out afresh "
                + "(re-sharded with --max-shard-size) and committed atomically. A sharded save (a folder of "
                + "DCP rank files) is consolidated: its pieces are written into whole tensors.")
final class CopyCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "SRC", description = "Checkpoint folder or .safetensors file.")
    String from;

    @Parameters(index = "1", paramLabel = "DST", description = "Folder to create; must be empty or absent unless --force.")
    String to;

    @Mixin
    WriteOptions write;

    @Mixin
    JsonOutput json;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        Endpoints.requireApart(spec.commandLine(), from, to);
        Transfer.Summary summary = Conversions.copy(from, to, write.settings(), write.shardSizeGiven(), spec.commandLine().getErr());
        Reports.printSummary(spec.commandLine().getOut(), summary, json.enabled);
        return ExitCodes.OK;
    }
}
