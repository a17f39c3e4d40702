package io.moeflux.connect.kafka;

import java.nio.file.Path;

/**
 * {@link LocalKafkaBroker} in a JVM of its own, until it is killed: {@code BrokerProcess PORT DATA_DIR}
 * (port 0 picks one). Prints {@code listening PORT} once clients can connect.
 */
final class BrokerProcess {
    private BrokerProcess() {}

    public static void main(String[] args) {
        LocalKafkaBroker broker = LocalKafkaBroker.start(Integer.parseInt(args[0]), Path.of(args[1]));
        System.out.println("listening " + broker.port());
        broker.awaitShutdown();
    }
}
