package io.moeflux.cli;

import java.util.Arrays;
import java.util.concurrent.Callable;
import java.util.concurrent.atomic.AtomicBoolean;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.ScopeType;
import reactor.core.publisher.Hooks;

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
        if (debugRequested(args)) {
            // The Kafka clients' retries and warnings, silenced in simplelogger.properties, speak up with --debug.
            System.setProperty("org.slf4j.simpleLogger.log.org.apache.kafka.clients", "warn");
            System.setProperty("org.slf4j.simpleLogger.log.reactor.kafka", "warn");
        }
        CommandLine cl = commandLine();
        // An error that arrives after its stream was cancelled has nobody to go to (a read or write cut
        // short by Ctrl-C or by a client that left); Reactor would log each with its stack trace.
        Hooks.onErrorDropped(e -> {
            if (debugRequested(args)) {
                e.printStackTrace();
            }
        });
        AtomicBoolean finished = new AtomicBoolean();
        // Ctrl-C before a write began (reading headers, planning, comparing) gets its line here; a write
        // in progress is cancelled, cleaned up and announced by its own hook (Transfer).
        Thread announce = new Thread(() -> {
            if (!finished.get() && Transfer.announceCancel()) {
                String command = cl.getParseResult() != null && cl.getParseResult().hasSubcommand()
                        ? " " + cl.getParseResult().subcommand().commandSpec().name() : "";
                cl.getErr().println("moeflux" + command + ": cancelled; nothing was committed");
                cl.getErr().flush();
            }
        }, "moeflux-announce-cancel");
        Runtime.getRuntime().addShutdownHook(announce);
        int code = cl.execute(args);
        finished.set(true);
        System.exit(code);
    }

    private static boolean debugRequested(String[] args) {
        return Arrays.asList(args).contains("--debug") || "1".equals(System.getenv("MOEFLUX_DEBUG"));
    }

    /** The configured command line: exit-code table, error handling. Tests run exactly this. */
    public static CommandLine commandLine() {
        Main main = new Main();
        CommandLine cl = new CommandLine(main);
        ErrorHandler errors = new ErrorHandler(() -> main.debug || "1".equals(System.getenv("MOEFLUX_DEBUG")));
        cl.setExecutionExceptionHandler(errors);
        cl.setParameterExceptionHandler(errors);
        cl.setHelpFactory(SpaceWrappingHelp.FACTORY);
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
