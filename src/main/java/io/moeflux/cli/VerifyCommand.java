package io.moeflux.cli;

import java.util.concurrent.Callable;
import java.util.function.Predicate;
import java.util.regex.Pattern;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

@Command(name = "verify", header = "Compare two checkpoints tensor by tensor; exit 1 if they differ.",
        mixinStandardHelpOptions = true, versionProvider = Version.class, sortOptions = false,
        description = "Compares two checkpoints tensor by tensor (name, dtype, shape, bytes), whatever their sharding; "
                + "exits 1 if they differ. Bytes are streamed and compared chunk by chunk, never loaded whole.")
final class VerifyCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "A", description = "Checkpoint folder or .safetensors file.")
    String a;

    @Parameters(index = "1", paramLabel = "B", description = "Checkpoint folder or .safetensors file.")
    String b;

    @Option(names = "--ignore-key-regex", converter = Converters.Regex.class, paramLabel = "RE",
            description = "Leave out keys (on both sides) that start with a match of RE, e.g. '(model\\.)?layers\\.80\\.'.")
    Pattern ignore;

    @Mixin
    JsonOutput json;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        Predicate<String> include = ignore == null ? key -> true : key -> !ignore.matcher(key).lookingAt();
        CheckpointComparison.Report report = Transfer.awaitCancellingOnExit(
                CheckpointComparison.compare(Endpoints.source(a), Endpoints.source(b), include), "verify",
                spec.commandLine().getErr());
        Reports.printComparison(spec.commandLine().getOut(), a, b, report, json.enabled);
        return report.identical() ? ExitCodes.OK : ExitCodes.DIFFERENT;
    }
}
