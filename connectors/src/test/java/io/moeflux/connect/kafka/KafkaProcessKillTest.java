package io.moeflux.connect.kafka;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.Progress;
import io.moeflux.tensor.TensorInfo;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/** The broker and a consumer killed with SIGKILL mid-checkpoint, each running in a JVM of its own. */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class KafkaProcessKillTest {
    static final Duration STARTUP = Duration.ofSeconds(60);

    @TempDir
    static Path shared;

    static Path brokerData;
    static int port;
    static ChildJvm broker;

    @TempDir
    Path tmp;

    @BeforeAll
    static void startBroker() throws InterruptedException {
        brokerData = shared.resolve("broker");
        broker = startBroker(0);
        port = Integer.parseInt(broker.awaitLine("listening ", STARTUP).substring("listening ".length()));
    }

    @AfterAll
    static void killBroker() throws InterruptedException {
        broker.close();
    }

    /** A broker on {@code port} and the class's data directory; a restart finds its topics there. */
    static ChildJvm startBroker(int port) {
        return ChildJvm.start(BrokerProcess.class, shared.resolve("broker.log"), Integer.toString(port),
                brokerData.toString());
    }

    static KafkaEndpoint endpoint(String topic) {
        return KafkaEndpoint.parse("kafka://localhost:" + port + "/" + topic + "?checkpoint=c");
    }

    @Test
    void aBrokerKilledMidPublishAndRestartedLeavesACompleteBitExactCheckpoint() throws Exception {
        // 6 MiB in 96 chunks of 64 KiB, at most 15 of them in flight.
        List<TensorInfo> infos = TestCheckpoints.syntheticInfos(24, 256 << 10, 6);
        long total = infos.stream().mapToLong(TensorInfo::byteSize).sum();
        CountDownLatch killed = new CountDownLatch(1);
        AtomicLong acknowledgedAtKill = new AtomicLong();
        Progress killAThirdIn = new Progress() {
            long acknowledged;

            @Override
            public synchronized void bytesWritten(long bytes) {
                acknowledged += bytes;
                if (acknowledged >= total / 3 && killed.getCount() > 0) {
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
        KafkaSinkOptions options = KafkaSinkOptions.to(endpoint("killed-broker")).withChunkBytes(64 << 10)
                .withBufferMemory(1 << 20).withPartitionsIfCreated(3);
        CheckpointDescriptor planned = CheckpointDescriptor.UNKNOWN.withTensors(infos);
        CompletableFuture<CommitSummary> publish = KafkaCheckpointSink.create(options.withProgress(killAThirdIn))
                .write(planned, TestCheckpoints.synthetic(infos, 11))
                .toFuture();

        assertThat(killed.await(60, TimeUnit.SECONDS)).isTrue();
        assertThat(acknowledgedAtKill.get()).isLessThan(total);
        broker = startBroker(port);
        broker.awaitLine("listening ", STARTUP);

        CommitSummary summary;
        try {
            summary = publish.get(90, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            // The other permitted outcome: a clear failure, after which publishing again succeeds.
            assertThat(e.getCause()).isInstanceOf(UncheckedIOException.class)
                    .hasMessageContaining("publishing checkpoint c to " + endpoint("killed-broker") + " failed");
            summary = KafkaCheckpointSink.create(options).write(planned, TestCheckpoints.synthetic(infos, 11))
                    .block(Duration.ofSeconds(60));
        }
        assertThat(summary.tensors()).isEqualTo(infos.size());
        assertThat(summary.bytes()).isEqualTo(total);
        KafkaCheckpointSource read = KafkaCheckpointSource.create(KafkaSourceOptions.from(endpoint("killed-broker")));
        assertThat(TestCheckpoints.digest(read)).isEqualTo(TestCheckpoints.digest(TestCheckpoints.synthetic(infos, 11)));
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

        // The file sink cannot resume a half-written folder: the restarted copy reads the checkpoint again.
        try (ChildJvm again = ChildJvm.start(KafkaToFileProcess.class, log, endpoint("killed-consumer").toString(),
                out.toString(), "0")) {
            assertThat(again.awaitLine("committed ", STARTUP)).isEqualTo("committed " + infos.size());
            assertThat(again.awaitExit(Duration.ofSeconds(30))).isZero();
        }
        assertThat(TestCheckpoints.digest(out)).isEqualTo(TestCheckpoints.digest(TestCheckpoints.synthetic(infos, 13)));
    }
}
