package io.moeflux.connect.kafka;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.Progress;
import io.moeflux.tensor.TensorInfo;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** The broker and a consumer killed with SIGKILL mid-checkpoint, each running in a JVM of its own. */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class KafkaProcessKillTest {
    static final Duration STARTUP = Duration.ofSeconds(60);
    /** A published checkpoint of 6 MiB: 96 chunks of 64 KiB. */
    static final List<TensorInfo> INFOS = TestCheckpoints.syntheticInfos(24, 256 << 10, 6);
    static final long TOTAL = INFOS.stream().mapToLong(TensorInfo::byteSize).sum();

    @TempDir
    static Path shared;

    static Path brokerData;
    static int port;
    static ChildJvm broker;

    @TempDir
    Path tmp;

    @BeforeAll
    static void startBrokerProcess() throws InterruptedException {
        brokerData = shared.resolve("broker");
        broker = brokerProcess(0);
        port = Integer.parseInt(broker.awaitLine("listening ", STARTUP).substring("listening ".length()));
    }

    @AfterAll
    static void killBrokerProcess() throws InterruptedException {
        broker.close();
    }

    /** A broker on {@code port} and the class's data directory; a restart finds its topics there. */
    static ChildJvm brokerProcess(int port) {
        return ChildJvm.start(BrokerProcess.class, shared.resolve("broker.log"), Integer.toString(port),
                brokerData.toString());
    }

    static KafkaEndpoint endpoint(String topic) {
        return KafkaEndpoint.parse("kafka://localhost:" + port + "/" + topic + "?checkpoint=c");
    }

    @Test
    void aBrokerKilledMidPublishAndRestartedLeavesACompleteBitExactCheckpoint() throws Exception {
        KafkaSinkOptions options = sink("killed-broker");
        CompletableFuture<CommitSummary> publish = publishKillingTheBrokerAThirdIn(options, 11);
        restartBroker();

        CommitSummary summary;
        try {
            summary = publish.get(90, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            // The producer retries for up to its delivery timeout (2 min), well past the restart, so the
            // publish normally completes; the other permitted outcome is a clear failure, after which
            // publishing again succeeds.
            assertFailedClearly(e.getCause(), options);
            summary = KafkaCheckpointSink.create(options).write(planned(), TestCheckpoints.synthetic(INFOS, 11))
                    .block(Duration.ofSeconds(60));
        }
        assertThat(summary.tensors()).isEqualTo(INFOS.size());
        assertThat(summary.bytes()).isEqualTo(TOTAL);
        assertReadsBitExact(options, 11);
    }

    @Test
    void aPublishWhoseBrokerStaysDeadPastTheDeliveryTimeoutFailsClearlyAndPublishingAgainIsBitExact() throws Exception {
        // The producer gives up on a record after 3 s; the broker stays dead until it has.
        KafkaSinkOptions options = sink("dead-broker").withProducerProperties(Map.of(
                ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 2000, ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 3000));
        CompletableFuture<CommitSummary> publish = publishKillingTheBrokerAThirdIn(options, 17);
        assertThatThrownBy(() -> publish.get(60, TimeUnit.SECONDS)).isInstanceOf(ExecutionException.class)
                .satisfies(e -> assertFailedClearly(e.getCause(), options));
        restartBroker();

        // Readers see the abandoned third as well; its chunks agree with the new ones and are dropped.
        CommitSummary summary = KafkaCheckpointSink.create(options.withProducerProperties(Map.of()))
                .write(planned(), TestCheckpoints.synthetic(INFOS, 17))
                .block(Duration.ofSeconds(60));
        assertThat(summary.tensors()).isEqualTo(INFOS.size());
        assertReadsBitExact(options, 17);
    }

    @Test
    void aConsumerKilledMidCheckpointLeavesNoOutputAndItsRestartIsBitExact() throws Exception {
        List<TensorInfo> infos = TestCheckpoints.syntheticInfos(24, 64 << 10, 6);
        KafkaCheckpointSink.create(KafkaSinkOptions.to(endpoint("killed-consumer")).withChunkBytes(16 << 10)
                        .withPartitionsIfCreated(3))
                .write(CheckpointDescriptor.UNKNOWN.withTensors(infos), TestCheckpoints.synthetic(infos, 13))
                .block(Duration.ofSeconds(60));
        Path out = tmp.resolve("out");
        Path log = tmp.resolve("consumer.log");

        try (ChildJvm slow = ChildJvm.start(KafkaToFileProcess.class, log, endpoint("killed-consumer").toString(),
                out.toString(), "200")) {
            for (int i = 0; i < infos.size() / 3; i++) {
                slow.awaitLine("written ", STARTUP);
            }
            slow.kill();
        }
        // Nothing under the output's name; a hidden staging folder may stay behind.
        assertThat(out).doesNotExist();
        try (Stream<Path> left = Files.list(tmp)) {
            assertThat(left.map(p -> p.getFileName().toString()).filter(n -> !n.equals("consumer.log")))
                    .allMatch(n -> n.startsWith(".out.partial-"));
        }

        // The file sink cannot resume a half-written folder: the restarted copy writes every tensor again.
        try (ChildJvm again = ChildJvm.start(KafkaToFileProcess.class, log, endpoint("killed-consumer").toString(),
                out.toString(), "0")) {
            for (int i = 0; i < infos.size(); i++) {
                again.awaitLine("written ", STARTUP);
            }
            assertThat(again.awaitLine("committed ", STARTUP)).isEqualTo("committed " + infos.size());
            assertThat(again.awaitExit(Duration.ofSeconds(30))).isZero();
        }
        assertThat(TestCheckpoints.digest(out)).isEqualTo(TestCheckpoints.digest(TestCheckpoints.synthetic(infos, 13)));
    }

    /** 64 KiB chunks, at most 15 in flight, on 3 partitions. */
    static KafkaSinkOptions sink(String topic) {
        return KafkaSinkOptions.to(endpoint(topic)).withChunkBytes(64 << 10).withBufferMemory(1 << 20)
                .withPartitionsIfCreated(3);
    }

    static CheckpointDescriptor planned() {
        return CheckpointDescriptor.UNKNOWN.withTensors(INFOS);
    }

    /** Starts publishing and returns once the broker has been killed, a third of the way in. */
    static CompletableFuture<CommitSummary> publishKillingTheBrokerAThirdIn(KafkaSinkOptions options, long seed)
            throws InterruptedException {
        CountDownLatch killed = new CountDownLatch(1);
        AtomicLong acknowledgedAtKill = new AtomicLong();
        Progress killAThirdIn = new Progress() {
            long acknowledged;

            @Override
            public synchronized void bytesWritten(long bytes) {
                acknowledged += bytes;
                if (acknowledged >= TOTAL / 3 && killed.getCount() > 0) {
                    // Killed inside the acknowledgement, so no further acknowledgement (and no commit
                    // record, which waits for all of them) can slip in before the broker is gone.
                    try {
                        broker.kill();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    }
                    acknowledgedAtKill.set(acknowledged);
                    killed.countDown();
                }
            }

            @Override
            public void tensorWritten(String fqn) {}
        };
        CompletableFuture<CommitSummary> publish = KafkaCheckpointSink.create(options.withProgress(killAThirdIn))
                .write(planned(), TestCheckpoints.synthetic(INFOS, seed))
                .toFuture();
        assertThat(killed.await(60, TimeUnit.SECONDS)).isTrue();
        assertThat(acknowledgedAtKill.get()).isLessThan(TOTAL);
        return publish;
    }

    /** A new broker process on the same port and data directory. */
    static void restartBroker() throws InterruptedException {
        broker = brokerProcess(port);
        broker.awaitLine("listening ", STARTUP);
    }

    static void assertFailedClearly(Throwable failure, KafkaSinkOptions options) {
        assertThat(failure).isInstanceOf(UncheckedIOException.class)
                .hasMessageContaining("publishing checkpoint c to " + options.endpoint() + " failed");
    }

    /** Every tensor read back once, bit for bit. */
    static void assertReadsBitExact(KafkaSinkOptions options, long seed) {
        KafkaCheckpointSource read = KafkaCheckpointSource.create(KafkaSourceOptions.from(options.endpoint()));
        assertThat(TestCheckpoints.digest(read)).isEqualTo(TestCheckpoints.digest(TestCheckpoints.synthetic(INFOS, seed)));
    }
}
