package io.moeflux.connect.kafka;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.moeflux.connect.safetensors.SafetensorsSink;
import io.moeflux.connect.safetensors.SafetensorsSinkOptions;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.Progress;
import io.moeflux.tensor.TensorInfo;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.zip.CRC32C;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.internals.RecordHeaders;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DenseTensor;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;
import reactor.test.StepVerifier;

/** Broken, interleaved and interrupted checkpoints on a real broker. */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class KafkaFaultsTest {
    @RegisterExtension
    static final KafkaBroker KAFKA = new KafkaBroker();

    static final int CHUNK = 4096;
    /** Six tensors of three to four chunks each over three layers. */
    static final List<TensorInfo> INFOS = TestCheckpoints.syntheticInfos(6, 10_000, 3);
    static final String VICTIM = INFOS.get(4).name();

    @TempDir
    Path tmp;

    static RawPublisher raw(String topic) {
        KAFKA.createTopic(topic, 3);
        return new RawPublisher(KAFKA.bootstrapServers(), topic, 3, CHUNK);
    }

    static KafkaCheckpointSource source(String topic, String id) {
        return KafkaCheckpointSource.create(KafkaSourceOptions.from(KAFKA.endpoint(topic, id))
                .withStallTimeout(Duration.ofSeconds(3)));
    }

    static Map<String, String> expected(long seed) {
        return TestCheckpoints.digest(TestCheckpoints.synthetic(INFOS, seed));
    }

    @Test
    void aMissingCheckpointIsReportedWhenTheStallTimeoutHasPassedNotMinutesLaterAndTheWaitIsSaid() {
        RawPublisher p = raw("absent");
        p.send(p.records("present", INFOS, 1));
        List<String> said = new java.util.concurrent.CopyOnWriteArrayList<>();
        KafkaCheckpointSource absent = KafkaCheckpointSource.create(KafkaSourceOptions.from(KAFKA.endpoint("absent", "missing"))
                .withStallTimeout(Duration.ofSeconds(5)).withWaiting(said::add));
        long start = System.nanoTime();

        assertThatThrownBy(() -> absent.describe().block())
                .isInstanceOf(KafkaCheckpointException.class)
                .hasMessageContaining("holds no manifest of checkpoint missing");

        // Each scan builds a consumer and reads the partition, so counting tries overran the timeout by minutes.
        assertThat(Duration.ofNanos(System.nanoTime() - start)).isBetween(Duration.ofSeconds(5), Duration.ofSeconds(12));
        assertThat(said).singleElement().asString().contains("the manifest of checkpoint missing").contains("absent");
    }

    @Test
    void aCorruptedChunkFailsNamingTheTensor() {
        RawPublisher p = raw("corrupt");
        List<ProducerRecord<byte[], byte[]>> records = p.records("c", INFOS, 1);
        records.stream().filter(r -> RawPublisher.isChunk(r, VICTIM, 1)).findFirst().orElseThrow().value()[7] ^= 1;
        p.send(records);
        assertThatThrownBy(() -> TestCheckpoints.digest(source("corrupt", "c")))
                .isInstanceOf(KafkaCheckpointException.class)
                .hasMessageContaining("tensor " + VICTIM)
                .hasMessageContaining("chunk 1 of 3 has a bad checksum");
    }

    @Test
    void aMissingChunkInTheMiddleFailsNamingTheTensorAndTheChunk() {
        RawPublisher p = raw("gap");
        List<ProducerRecord<byte[], byte[]>> records = p.records("c", INFOS, 1);
        records.removeIf(r -> RawPublisher.isChunk(r, VICTIM, 1));
        p.send(records);
        assertThatThrownBy(() -> TestCheckpoints.digest(source("gap", "c")))
                .isInstanceOf(KafkaCheckpointException.class)
                .hasMessageContaining("tensor " + VICTIM)
                .hasMessageContaining("chunk 2 of 3 arrived after chunk 0; chunk 1 is missing");
    }

    @Test
    void aMissingLastChunkFailsWhenTheCommitRecordsArrive() {
        RawPublisher p = raw("gap-end");
        List<ProducerRecord<byte[], byte[]>> records = p.records("c", INFOS, 1);
        records.removeIf(r -> RawPublisher.isChunk(r, VICTIM, 2));
        p.send(records);
        assertThatThrownBy(() -> TestCheckpoints.digest(source("gap-end", "c")))
                .isInstanceOf(KafkaCheckpointException.class)
                .hasMessageContaining("tensor " + VICTIM)
                .hasMessageContaining("chunk 2 of 3 is missing");
    }

    @Test
    void aMissingCommitFailsAfterTheStallTimeout() {
        RawPublisher p = raw("no-commit");
        List<ProducerRecord<byte[], byte[]>> records = p.records("c", INFOS, 1);
        records.removeIf(RawPublisher::isCommit);
        p.send(records);
        long start = System.nanoTime();
        assertThatThrownBy(() -> TestCheckpoints.digest(source("no-commit", "c")))
                .isInstanceOf(KafkaCheckpointException.class)
                .hasMessageContaining("checkpoint c on topic no-commit")
                .hasMessageContaining("no record arrived for 3 s");
        assertThat(Duration.ofNanos(System.nanoTime() - start)).isLessThan(Duration.ofSeconds(30));
    }

    @Test
    void aDuplicateChunkThatDisagreesFailsAndOneThatAgreesIsDropped() {
        RawPublisher agree = raw("dup-agree");
        List<ProducerRecord<byte[], byte[]>> records = agree.records("c", INFOS, 1);
        // A publisher that died and published everything again: every chunk twice, commits once.
        List<ProducerRecord<byte[], byte[]>> twice =
                new ArrayList<>(records.stream().filter(r -> !RawPublisher.isCommit(r)).toList());
        twice.addAll(records);
        agree.send(twice);
        assertThat(TestCheckpoints.digest(source("dup-agree", "c"))).isEqualTo(expected(1));

        RawPublisher disagree = raw("dup-disagree");
        List<ProducerRecord<byte[], byte[]>> altered = disagree.records("c", INFOS, 1);
        int at = indexOf(altered, VICTIM, 1);
        ProducerRecord<byte[], byte[]> original = altered.get(at);
        byte[] value = original.value().clone();
        value[0] ^= 1;
        altered.add(at + 1, withValue(original, value));
        disagree.send(altered);
        assertThatThrownBy(() -> TestCheckpoints.digest(source("dup-disagree", "c")))
                .isInstanceOf(KafkaCheckpointException.class)
                .hasMessageContaining("tensor " + VICTIM)
                .hasMessageContaining("chunk 1 of 3 arrived again and disagrees with its first copy");
    }

    @Test
    void twoCheckpointsInterleavedOnOneTopicAreEachReassembled() {
        RawPublisher p = raw("interleaved");
        List<ProducerRecord<byte[], byte[]>> a = p.records("a", INFOS, 1);
        List<ProducerRecord<byte[], byte[]>> b = p.records("b", INFOS, 2);
        List<ProducerRecord<byte[], byte[]>> mixed = new ArrayList<>();
        for (int i = 0; i < Math.max(a.size(), b.size()); i++) {
            if (i < a.size()) {
                mixed.add(a.get(i));
            }
            if (i < b.size()) {
                mixed.add(b.get(i));
            }
        }
        p.send(mixed);
        assertThat(TestCheckpoints.digest(source("interleaved", "a"))).isEqualTo(expected(1));
        assertThat(TestCheckpoints.digest(source("interleaved", "b"))).isEqualTo(expected(2));
        assertThat(expected(1)).isNotEqualTo(expected(2));
    }

    @Test
    void readingStartsWhereTheCheckpointStartsNotAtTheBeginningOfTheTopic() {
        RawPublisher p = raw("seek");
        // Chunks of an abandoned publish of the same id an hour ago, one of them corrupt: a reader that
        // started at the beginning of the topic would trip over it.
        long anHourAgo = System.currentTimeMillis() - Duration.ofHours(1).toMillis();
        List<ProducerRecord<byte[], byte[]>> stale = new ArrayList<>();
        for (var r : p.records("c", INFOS, 1)) {
            if (WireFormat.DATA.equals(WireFormat.typeOf(r.headers()))) {
                stale.add(new ProducerRecord<>(r.topic(), r.partition(), anHourAgo, r.key(), r.value(), r.headers()));
            }
        }
        stale.getFirst().value()[0] ^= 1;
        List<ProducerRecord<byte[], byte[]>> all = new ArrayList<>(stale);
        all.addAll(p.records("c", INFOS, 2));
        p.send(all);
        assertThat(TestCheckpoints.digest(source("seek", "c"))).isEqualTo(expected(2));
    }

    @Test
    void aBrokerRestartMidPublishLosesAndDuplicatesNothing() throws Exception {
        List<TensorInfo> infos = TestCheckpoints.syntheticInfos(32, 512 << 10, 8);
        AtomicBoolean restarted = new AtomicBoolean();
        CountDownLatch back = new CountDownLatch(1);
        Progress restartHalfway = new Progress() {
            long bytes;

            @Override
            public synchronized void bytesWritten(long n) {
                bytes += n;
                if (bytes > 6 << 20 && restarted.compareAndSet(false, true)) {
                    Thread.ofPlatform().start(() -> {
                        KAFKA.stop();
                        KAFKA.start();
                        back.countDown();
                    });
                }
            }

            @Override
            public void tensorWritten(String fqn) {}
        };
        KafkaSinkOptions options = KafkaSinkOptions.to(KAFKA.endpoint("restart", "c")).withChunkBytes(64 << 10)
                .withPartitionsIfCreated(3).withProgress(restartHalfway);
        var summary = KafkaCheckpointSink.create(options)
                .write(CheckpointDescriptor.UNKNOWN.withTensors(infos), TestCheckpoints.synthetic(infos, 7))
                .block();
        assertThat(back.await(60, TimeUnit.SECONDS)).isTrue();
        assertThat(restarted).isTrue();
        assertThat(summary.tensors()).isEqualTo(32);
        Map<String, String> read = TestCheckpoints.digest(source("restart", "c"));
        assertThat(read).isEqualTo(TestCheckpoints.digest(TestCheckpoints.synthetic(infos, 7)));
    }

    @Test
    void aConsumerStoppedMidCheckpointLeavesNoOutputAndARestartIsBitExact() throws Exception {
        List<TensorInfo> infos = TestCheckpoints.syntheticInfos(24, 64 << 10, 6);
        KafkaCheckpointSink.create(KafkaSinkOptions.to(KAFKA.endpoint("resume", "c")).withChunkBytes(16 << 10)
                        .withPartitionsIfCreated(3))
                .write(CheckpointDescriptor.UNKNOWN.withTensors(infos), TestCheckpoints.synthetic(infos, 3))
                .block();
        Path out = tmp.resolve("out");
        AtomicInteger written = new AtomicInteger();
        CountDownLatch halfway = new CountDownLatch(1);
        Progress countTensors = new Progress() {
            @Override
            public void bytesWritten(long bytes) {}

            @Override
            public void tensorWritten(String fqn) {
                if (written.incrementAndGet() == infos.size() / 2) {
                    halfway.countDown();
                }
            }
        };
        KafkaCheckpointSource first = source("resume", "c");
        Disposable run = SafetensorsSink.create(SafetensorsSinkOptions.to(out).withProgress(countTensors))
                .write(first.describe().block(), first.tensors().delayElements(Duration.ofMillis(20)))
                .subscribe();
        assertThat(halfway.await(60, TimeUnit.SECONDS)).isTrue();
        run.dispose();
        assertThat(out).doesNotExist();

        KafkaCheckpointSource again = source("resume", "c");
        SafetensorsSink.create(SafetensorsSinkOptions.to(out)).write(again.describe().block(), again.tensors()).block();
        assertThat(TestCheckpoints.digest(out)).isEqualTo(TestCheckpoints.digest(TestCheckpoints.synthetic(infos, 3)));
        assertThat(Files.exists(out)).isTrue();
    }

    @Test
    void aPublishThatFailsOrIsCancelledReleasesEveryTensorAndCommitsNothing() {
        List<TensorInfo> infos = TestCheckpoints.syntheticInfos(16, 64 << 10, 4);
        AtomicInteger made = new AtomicInteger();
        AtomicInteger released = new AtomicInteger();
        Flux<TensorEvent> tracked = TestCheckpoints.synthetic(infos, 4).map(e -> {
            made.incrementAndGet();
            DenseTensor t = (DenseTensor) e.tensor();
            return new TensorEvent(e.fqn(), new DenseTensor(t.dtype(), t.shape(), t.data(), () -> {
                released.incrementAndGet();
                t.release();
            }));
        });
        KafkaSinkOptions options = KafkaSinkOptions.to(KAFKA.endpoint("abandoned", "c")).withChunkBytes(16 << 10);

        // The source fails half-way.
        StepVerifier.create(KafkaCheckpointSink.create(options).write(CheckpointDescriptor.UNKNOWN,
                        tracked.take(8).concatWith(Flux.error(new IllegalStateException("disk gone")))))
                .verifyErrorMessage("disk gone");
        assertThat(released.get()).isEqualTo(made.get()).isEqualTo(8);

        // A tensor that is not in the plan.
        StepVerifier.create(KafkaCheckpointSink.create(options).write(CheckpointDescriptor.UNKNOWN.withTensors(
                        infos.subList(0, 4)), tracked))
                .expectErrorSatisfies(e -> assertThat(e).hasMessageContaining("is not in the planned checkpoint"))
                .verify();
        assertThat(released.get()).isEqualTo(made.get());

        // Cancelled once data flows.
        AtomicInteger acknowledged = new AtomicInteger();
        StepVerifier.create(KafkaCheckpointSink.create(options.withProgress(new Progress() {
                    @Override
                    public void bytesWritten(long bytes) {}

                    @Override
                    public void tensorWritten(String fqn) {
                        acknowledged.incrementAndGet();
                    }
                })).write(CheckpointDescriptor.UNKNOWN, tracked.delayElements(Duration.ofMillis(20))))
                .expectSubscription()
                .then(() -> await(() -> acknowledged.get() >= 2))
                .thenCancel()
                .verify();
        await(() -> released.get() == made.get());
        assertThat(released.get()).isEqualTo(made.get());

        assertThatThrownBy(() -> TestCheckpoints.digest(source("abandoned", "c")))
                .isInstanceOf(KafkaCheckpointException.class)
                .hasMessageContaining("no record arrived");
    }

    private static void await(java.util.function.BooleanSupplier condition) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("condition not met within 30 s");
            }
            Thread.onSpinWait();
        }
    }

    private static int indexOf(List<ProducerRecord<byte[], byte[]>> records, String tensor, long chunk) {
        for (int i = 0; i < records.size(); i++) {
            if (RawPublisher.isChunk(records.get(i), tensor, chunk)) {
                return i;
            }
        }
        throw new IllegalArgumentException("no chunk " + chunk + " of " + tensor);
    }

    /** The same record with another value and a checksum that matches it. */
    private static ProducerRecord<byte[], byte[]> withValue(ProducerRecord<byte[], byte[]> r, byte[] value) {
        CRC32C crc = new CRC32C();
        crc.update(value);
        RecordHeaders headers = new RecordHeaders(r.headers().toArray());
        headers.remove(WireFormat.CRC32C);
        headers.add(WireFormat.CRC32C, WireFormat.crcText((int) crc.getValue()).getBytes(StandardCharsets.UTF_8));
        return new ProducerRecord<>(r.topic(), r.partition(), r.key(), value, headers);
    }
}
