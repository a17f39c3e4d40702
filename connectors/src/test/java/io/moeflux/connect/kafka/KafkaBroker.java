package io.moeflux.connect.kafka;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/** One real KRaft broker per test class (a static {@code @RegisterExtension}), stoppable and restartable. */
final class KafkaBroker implements BeforeAllCallback, AfterAllCallback {
    private Path dataDir;
    private int port;
    private LocalKafkaBroker broker;

    @Override
    public void beforeAll(ExtensionContext context) throws IOException {
        dataDir = Files.createTempDirectory("moeflux-kafka-test");
        broker = LocalKafkaBroker.start(0, dataDir);
        port = broker.port();
    }

    @Override
    public void afterAll(ExtensionContext context) throws IOException {
        stop();
        deleteTree(dataDir);
    }

    String bootstrapServers() {
        return "localhost:" + port;
    }

    KafkaEndpoint endpoint(String topic, String checkpoint) {
        return KafkaEndpoint.parse("kafka://" + bootstrapServers() + "/" + topic + "?checkpoint=" + checkpoint);
    }

    /** Stops the broker (its data stays). */
    synchronized void stop() {
        if (broker != null) {
            broker.close();
            broker = null;
        }
    }

    /** Starts it again on the same port and data. */
    synchronized void start() {
        if (broker == null) {
            broker = LocalKafkaBroker.start(port, dataDir);
        }
    }

    void createTopic(String topic, int partitions) {
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrapServers()))) {
            admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get(60, TimeUnit.SECONDS);
        } catch (Exception e) {
            throw new IllegalStateException("cannot create topic " + topic, e);
        }
    }

    private static void deleteTree(Path dir) {
        try (Stream<Path> files = Files.walk(dir)) {
            files.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
