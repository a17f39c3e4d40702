package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

class UsageTest {
    @Test
    void noCommandPrintsUsageAsAUsageError() {
        Cli r = Cli.run();
        assertThat(r.exitCode()).isEqualTo(ExitCodes.USAGE);
        assertThat(r.err()).contains("Usage: moeflux").contains("from-hf").contains("Exit codes:");
        assertThat(r.out()).isEmpty();
    }

    @Test
    void unknownOptionIsOneLineOnStderrWithExitCode2() {
        Cli r = Cli.run("from-hf", "a", "b", "--no-such-flag");
        assertThat(r.exitCode()).isEqualTo(ExitCodes.USAGE);
        assertThat(r.err().strip()).doesNotContain("\n").contains("moeflux from-hf").contains("--no-such-flag");
    }

    @Test
    void missingParameterIsAUsageError() {
        assertThat(Cli.run("to-hf", "only-in").exitCode()).isEqualTo(ExitCodes.USAGE);
    }

    @Test
    void dtypeOtherThanBf16F16F32IsRejected() {
        Cli r = Cli.run("from-hf", "a", "b", "--dtype", "i8");
        assertThat(r.exitCode()).isEqualTo(ExitCodes.USAGE);
        assertThat(r.err()).contains("bf16, f16 or f32");
    }

    @Test
    void unparseableShardSizeIsRejected() {
        Cli r = Cli.run("copy", "a", "b", "--max-shard-size", "5 parsecs");
        assertThat(r.exitCode()).isEqualTo(ExitCodes.USAGE);
        assertThat(r.err()).contains("5 parsecs");
    }

    @Test
    void expertParallelRankMustBeBelowSize() {
        Cli r = Cli.run("from-hf", "a", "b", "--ep-size", "2", "--ep-rank", "2");
        assertThat(r.exitCode()).isEqualTo(ExitCodes.USAGE);
        assertThat(r.err()).contains("--ep-rank");
    }

    @Test
    void invalidExcludeRegexIsRejected() {
        assertThat(Cli.run("to-hf", "a", "b", "--exclude-key-regex", "(").exitCode()).isEqualTo(ExitCodes.USAGE);
    }

    @Test
    void unknownPresetIsRejected(@TempDir Path dir) {
        Cli r = Cli.run("generate", dir.resolve("out"), "--preset", "huge");
        assertThat(r.exitCode()).isEqualTo(ExitCodes.USAGE);
        assertThat(r.err()).contains("tiny, hy3-keys, hy3-bench");
    }

    @Test
    void versionPrintsTheProjectVersion() {
        Cli r = Cli.run("--version");
        assertThat(r.exitCode()).isEqualTo(ExitCodes.OK);
        assertThat(r.out()).startsWith("moeflux ").doesNotContain("${").doesNotContain("unknown");
    }

    @Test
    void everyCommandsHelpListsTheExitCodes() {
        // Every subcommand, read from the command line itself, so a new one cannot be left out.
        var commands = Main.commandLine().getSubcommands().keySet().stream().filter(c -> !c.equals("help")).toList();
        assertThat(commands).contains("from-hf", "to-hf", "copy", "inspect", "verify", "generate", "demo", "broker", "serve",
                "scale-out");
        for (String command : commands) {
            Cli r = Cli.run(command, "--help");
            assertThat(r.exitCode()).as(command).isEqualTo(ExitCodes.OK);
            assertThat(r.out()).as(command).contains("Exit codes:").contains("output exists").contains("cancelled (Ctrl-C)");
        }
    }

    @Test
    void helpWrapsAtSpacesSoFileNamesAndAddressesStayWhole() {
        // Picocli's own wrapping broke 'config.json' after the dot and 'kafka://HOST:PORT' after a colon. From 80
        // columns on, every word of every description fits its column, so each must appear whole.
        for (int width : new int[] {80, 91, 100}) {
            for (CommandLine command : Main.commandLine().getSubcommands().values()) {
                command.setUsageHelpWidth(width);
                String help = command.getUsageMessage(CommandLine.Help.Ansi.OFF);
                var spec = command.getCommandSpec();
                var texts = new ArrayList<>(List.of(spec.usageMessage().description()));
                spec.args().forEach(arg -> texts.addAll(List.of(arg.description())));
                for (String text : texts) {
                    for (String word : String.format(text).split("\\s+")) {
                        assertThat(help).as("%s at width %d", spec.name(), width).contains(word);
                    }
                }
                assertThat(help.lines()).allSatisfy(line -> assertThat(line.length()).isLessThanOrEqualTo(width));
            }
        }
    }
}
