package io.moeflux.cli;

import io.moeflux.connect.kafka.LocalKafkaBroker;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;
import picocli.CommandLine.Model.CommandSpec;

/** {@code moeflux broker}: a single-node Kafka for local use, demos and tests, in the foreground. */
@Command(
        name = "broker",
        mixinStandardHelpOptions = true,
        description = {
            "Runs a single-node Kafka broker (KRaft: broker and controller in one process) in the foreground "
                    + "until Ctrl-C. Its data stays in the data directory, so a restart keeps the topics.",
            "Then use kafka://localhost:PORT/TOPIC?checkpoint=ID as the input or output of from-hf, to-hf and copy."
        })
final class BrokerCommand implements Callable<Integer> {
    @Option(names = "--port", converter = Converters.Port.class, defaultValue = "9092", description = "Port clients connect to (default: ${DEFAULT-VALUE}).")
    int port;

    @Option(names = "--data-dir", required = true, description = "Where the broker keeps its logs and metadata.")
    Path dataDir;

    @Option(names = "--host", defaultValue = "localhost",
            description = "Name clients reach the broker under; it listens on all interfaces unless this is localhost "
                    + "(default: ${DEFAULT-VALUE}).")
    String host;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() {
        LocalKafkaBroker broker = LocalKafkaBroker.start(host, port, dataDir);
        Runtime.getRuntime().addShutdownHook(new Thread(broker::close, "moeflux-broker-shutdown"));
        spec.commandLine().getOut().println("Kafka broker listening on " + host + ":" + broker.port() + " (data in "
                + dataDir + "); Ctrl-C stops it");
        spec.commandLine().getOut().flush();
        broker.awaitShutdown();
        return ExitCodes.OK;
    }
}
