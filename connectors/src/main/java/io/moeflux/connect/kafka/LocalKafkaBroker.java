package io.moeflux.connect.kafka;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.BindException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.channels.FileChannel;
import java.nio.channels.OverlappingFileLockException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Properties;
import kafka.server.KafkaConfig;
import kafka.server.KafkaRaftServer;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.utils.Time;
import org.apache.kafka.metadata.storage.Formatter;
import org.apache.kafka.server.common.Features;
import org.apache.kafka.server.common.MetadataVersion;

/**
 * A single-node KRaft Kafka (broker and controller in one process) for local use, demos and tests:
 * {@code moeflux broker} runs one in the foreground, tests start one per class.
 *
 * <p>The data directory is formatted on first start and reused afterwards, so a broker closed and
 * started again on the same port and directory keeps its topics (the fault tests rely on that).
 * Internal topics have one replica and one partition, which is all a single node can offer and keeps
 * start-up fast.
 */
public final class LocalKafkaBroker implements AutoCloseable {
    private static final String CONTROLLER = "CONTROLLER";

    /** Held in the data directory while a broker runs on it: a second broker there would rewrite its quorum state. */
    private static final String LOCK_FILE = "moeflux-broker.lock";

    private final int port;
    private final KafkaRaftServer server;
    private final FileChannel lock;

    private LocalKafkaBroker(int port, KafkaRaftServer server, FileChannel lock) {
        this.port = port;
        this.server = server;
        this.lock = lock;
    }

    /** Starts a broker listening on {@code localhost:port} (0 picks a free port) with its logs in {@code dataDir}. */
    public static LocalKafkaBroker start(int port, Path dataDir) {
        return start("localhost", port, dataDir);
    }

    /**
     * Starts a broker listening on {@code host:port}; clients must reach it under {@code host}, which is
     * what the broker advertises (use the container's name in a compose network).
     */
    public static LocalKafkaBroker start(String host, int port, Path dataDir) {
        try {
            // Both refusals come before anything is written, so a broker already running keeps its data as it was.
            if (port != 0) {
                requireFree(host, port);
            }
            Files.createDirectories(dataDir);
            FileChannel lock = lock(dataDir);
            try {
                int brokerPort = port == 0 ? freePort() : port;
                // The controller port only matters inside this process, but KRaft pins it in the data
                // directory's quorum state, so a restart on the same directory must find it again.
                Path controllerPortFile = dataDir.resolve("moeflux-controller-port");
                int controllerPort = Files.exists(controllerPortFile)
                        ? Integer.parseInt(Files.readString(controllerPortFile).trim())
                        : freePort();
                Files.writeString(controllerPortFile, Integer.toString(controllerPort));
                Path logDir = dataDir.resolve("logs");
                KafkaConfig config = new KafkaConfig(config(host, brokerPort, controllerPort, logDir), false);
                format(logDir);
                KafkaRaftServer server = new KafkaRaftServer(config, Time.SYSTEM);
                server.startup();
                return new LocalKafkaBroker(brokerPort, server, lock);
            } catch (IOException | RuntimeException e) {
                lock.close();
                throw e;
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start a Kafka broker in " + dataDir + ": " + e.getMessage(), e);
        }
    }

    /** Locks {@code dataDir} for this broker, or says that another one (in this process or another) holds it. */
    private static FileChannel lock(Path dataDir) throws IOException {
        FileChannel channel = FileChannel.open(dataDir.resolve(LOCK_FILE), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
        try {
            if (channel.tryLock() != null) {
                return channel;
            }
        } catch (OverlappingFileLockException sameProcess) {
            // Another broker of this process holds it.
        }
        channel.close();
        throw new IOException("the data folder " + dataDir + " is in use by another broker");
    }

    /** Fails, naming the port, when something already listens on it (Kafka would log dozens of lines instead). */
    private static void requireFree(String host, int port) throws IOException {
        try (ServerSocket s = new ServerSocket()) {
            s.setReuseAddress(true);
            s.bind(new InetSocketAddress(listenHost(host), port));
        } catch (BindException e) {
            throw new BindException("port " + port + " is in use by another process");
        }
    }

    private static Properties config(String host, int brokerPort, int controllerPort, Path logDir) {
        Properties p = new Properties();
        p.put("process.roles", "broker,controller");
        p.put("node.id", "1");
        p.put("controller.quorum.voters", "1@localhost:" + controllerPort);
        p.put("listeners", "PLAINTEXT://" + listenHost(host) + ":" + brokerPort + ","
                + CONTROLLER + "://localhost:" + controllerPort);
        p.put("advertised.listeners", "PLAINTEXT://" + host + ":" + brokerPort);
        p.put("controller.listener.names", CONTROLLER);
        p.put("listener.security.protocol.map", "PLAINTEXT:PLAINTEXT," + CONTROLLER + ":PLAINTEXT");
        p.put("inter.broker.listener.name", "PLAINTEXT");
        p.put("log.dirs", logDir.toString());
        p.put("offsets.topic.replication.factor", "1");
        p.put("offsets.topic.num.partitions", "1");
        p.put("transaction.state.log.replication.factor", "1");
        p.put("transaction.state.log.min.isr", "1");
        p.put("transaction.state.log.num.partitions", "1");
        p.put("group.initial.rebalance.delay.ms", "0");
        // After a crash the restarted controller still holds the dead broker's registration and refuses
        // the new one until that session expires (9 s by default); here the broker heartbeats to its own
        // process, so a shorter session brings a killed broker back in seconds.
        p.put("broker.session.timeout.ms", "4000");
        p.put("broker.heartbeat.interval.ms", "1000");
        p.put("num.partitions", "1");
        p.put("auto.create.topics.enable", "false");
        return p;
    }

    /** Listens on every interface when advertised under a name other than localhost (containers). */
    private static String listenHost(String host) {
        return host.equals("localhost") ? "localhost" : "0.0.0.0";
    }

    private static void format(Path logDir) throws IOException {
        if (Files.exists(logDir.resolve("meta.properties"))) {
            return;
        }
        try {
            new Formatter()
                    .setPrintStream(System.err)
                    .setSupportedFeatures(Features.PRODUCTION_FEATURES)
                    .setNodeId(1)
                    .setClusterId(Uuid.randomUuid().toString())
                    .setDirectories(List.of(logDir.toString()))
                    .setMetadataLogDirectory(logDir.toString())
                    .setReleaseVersion(MetadataVersion.LATEST_PRODUCTION)
                    .setControllerListenerName(CONTROLLER)
                    .run();
        } catch (IOException | RuntimeException e) {
            throw e;
        } catch (Exception e) {
            throw new IOException("cannot format " + logDir + ": " + e.getMessage(), e);
        }
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    public int port() {
        return port;
    }

    /** {@code localhost:port}, for {@code bootstrap.servers}. */
    public String bootstrapServers() {
        return "localhost:" + port;
    }

    /** Blocks until the broker has shut down (for the foreground CLI command). */
    public void awaitShutdown() {
        server.awaitShutdown();
    }

    /** Shuts the broker down; its data stays in the data directory. */
    @Override
    public void close() {
        server.shutdown();
        server.awaitShutdown();
        try {
            lock.close();
        } catch (IOException e) {
            // Closing the channel releases the lock either way; the process may exit next.
        }
    }
}
