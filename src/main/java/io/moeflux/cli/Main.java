package io.moeflux.cli;

import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.ScopeType;

/** The {@code moeflux} command: converts, inspects, verifies and generates Mixture-of-Experts checkpoints. */
@Command(
        name = "moeflux",
        mixinStandardHelpOptions = true,
        versionProvider = Version.class,
        sortOptions = false,
        description = "Streams Mixture-of-Experts checkpoints (tencent/Hy3-preview) between the on-disk Hugging Face "
                + "layout and NeMo Automodel's native layout, bit-exactly, with bounded memory.",
        subcommands = {
            FromHfCommand.class,
            ToHfCommand.class,
            CopyCommand.class,
            InspectCommand.class,
            VerifyCommand.class,
            GenerateCommand.class,
            DemoCommand.class,
            BrokerCommand.class,
            ScaleOutCommand.class,
            ServeCommand.class,
            CommandLine.HelpCommand.class,
        })
public final class Main implements Callable<Integer> {
    @Option(names = "--debug", scope = ScopeType.INHERIT,
            description = "Print stack traces of errors (also MOEFLUX_DEBUG=1).")
    boolean debug;

    @CommandLine.Spec
    CommandLine.Model.CommandSpec spec;

    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }

    /** The configured command line: exit-code table, error handling. Tests run exactly this. */
    public static CommandLine commandLine() {
        Main main = new Main();
        CommandLine cl = new CommandLine(main);
        ErrorHandler errors = new ErrorHandler(() -> main.debug || "1".equals(System.getenv("MOEFLUX_DEBUG")));
        cl.setExecutionExceptionHandler(errors);
        cl.setParameterExceptionHandler(errors);
        cl.setUsageHelpAutoWidth(true);
        applyExitCodeTable(cl);
        return cl;
    }

    private static void applyExitCodeTable(CommandLine cl) {
        cl.getCommandSpec().usageMessage().exitCodeListHeading("%nExit codes:%n").exitCodeList(ExitCodes.helpTable());
        cl.getSubcommands().values().forEach(Main::applyExitCodeTable);
    }

    /** {@code moeflux} alone prints the usage, to stderr, as a usage error. */
    @Override
    public Integer call() {
        spec.commandLine().usage(spec.commandLine().getErr());
        return ExitCodes.USAGE;
    }
}
