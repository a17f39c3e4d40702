package io.moeflux.connect.kafka;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.DenseTensor;
import io.moeflux.tensor.Releasable;
import io.moeflux.tensor.TensorInfo;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.tools.ProducerPerformance;
import org.junit.jupiter.api.Test;
import reactor.core.publisher.Flux;

/**
 * The Kafka publish benchmark (run by src/bench/kafka-bench.sh, not by the test suite): publishes a
 * checkpoint of at least 1 GB to a local broker with the Kafka sink, and the same bytes with Kafka's
 * own ProducerPerformance at the same record size and producer settings, alternately, in one JVM and
 * on one broker, and prints throughput as a ratio (target >= 0.7).
 */
class KafkaPublishBench {
    private static final Pattern SUMMARY = Pattern.compile("(\\d+) records sent, [\\d.]+ records/sec \\(([\\d.]+) MB/sec\\)");

    @Test
    void publishThroughputAgainstProducerPerformance() throws Exception {
        long tensorBytes = 16L << 20;
        int tensors = Integer.getInteger("kafka.bench.tensors", 64);
        int rounds = Integer.getInteger("kafka.bench.rounds", 2);
        int chunkBytes = KafkaSinkOptions.DEFAULT_CHUNK_BYTES;
        Path dir = Files.createTempDirectory(Path.of(System.getProperty("kafka.bench.dir", System.getProperty("java.io.tmpdir"))),
                "moeflux-kafka-bench");
        // One random 16 MiB tensor body shared by every tensor: the bytes need not differ (nothing is
        // compressed), and nothing is generated while the clock runs.
        Arena arena = Arena.ofShared();
        MemorySegment body = arena.allocate(tensorBytes, 64);
        SplittableRandom random = new SplittableRandom(1);
        for (long off = 0; off < tensorBytes; off += 8) {
            body.set(ValueLayout.JAVA_LONG_UNALIGNED, off, random.nextLong());
        }
        List<TensorInfo> infos = new ArrayList<>();
        for (int i = 0; i < tensors; i++) {
            infos.add(new TensorInfo("model.layers." + i + ".mlp.weight", DType.BF16, new long[] {tensorBytes / 2}));
        }
        long total = tensors * tensorBytes;
        int payload = WireFormat.payloadPerChunk("bench", infos.getLast(), chunkBytes);
        long records = (total + payload - 1) / payload;

        try (LocalKafkaBroker broker = LocalKafkaBroker.start(0, dir)) {
            Map<String, Object> producer = ReactorKafkaSink.producerProperties(broker.bootstrapServers(), chunkBytes,
                    KafkaSinkOptions.DEFAULT_BUFFER_MEMORY, Map.of());
            System.out.printf("kafka-bench: %d tensors of %d MiB = %.2f GB per run; record %d bytes of data (%d with framing)"
                    + ", %d records%n", tensors, tensorBytes >> 20, total / 1e9, payload, chunkBytes, records);
            double bestMoeflux = 0;
            double bestBaseline = 0;
            for (int round = 0; round < rounds; round++) {
                String perfTopic = "perf-" + round;
                createTopic(broker, perfTopic);
                double baseline = producerPerformance(broker, perfTopic, payload, records, producer);
                deleteTopic(broker, perfTopic);

                String topic = "moeflux-" + round;
                createTopic(broker, topic);
                long start = System.nanoTime();
                KafkaCheckpointSink.create(KafkaSinkOptions.to(
                                KafkaEndpoint.parse("kafka://" + broker.bootstrapServers() + "/" + topic + "?checkpoint=bench")))
                        .write(CheckpointDescriptor.UNKNOWN.withTensors(infos), Flux.fromIterable(infos)
                                .map(i -> new TensorEvent(i.name(), new DenseTensor(i.dtype(), i.shape(), body, Releasable.NONE))))
                        .block();
                double seconds = (System.nanoTime() - start) / 1e9;
                double moeflux = total / seconds / (1 << 20);
                deleteTopic(broker, topic);
                System.out.printf("kafka-bench: round %d: ProducerPerformance %.1f MB/s, moeflux Kafka sink %.1f MB/s"
                        + " (%.2f s), ratio %.2f%n", round + 1, baseline, moeflux, seconds, moeflux / baseline);
                bestMoeflux = Math.max(bestMoeflux, moeflux);
                bestBaseline = Math.max(bestBaseline, baseline);
            }
            System.out.printf("kafka-bench: best of %d: moeflux %.1f MB/s / ProducerPerformance %.1f MB/s = ratio %.2f"
                    + " (target >= 0.70; MB = 2^20 bytes of tensor data)%n", rounds, bestMoeflux, bestBaseline,
                    bestMoeflux / bestBaseline);
        } finally {
            arena.close();
            try (var files = Files.walk(dir)) {
                files.sorted(java.util.Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
            }
        }
    }

    /** Runs ProducerPerformance in this JVM and returns its MB/s (value bytes, 2^20 per MB). */
    private static double producerPerformance(LocalKafkaBroker broker, String topic, int recordSize, long records,
            Map<String, Object> producer) throws Exception {
        List<String> args = new ArrayList<>(List.of("--topic", topic, "--num-records", Long.toString(records),
                "--record-size", Integer.toString(recordSize), "--throughput", "-1", "--producer-props"));
        producer.forEach((k, v) -> {
            if (!k.endsWith("serializer")) {
                args.add(k + "=" + (v instanceof Class<?> c ? c.getName() : v));
            }
        });
        PrintStream original = System.out;
        ByteArrayOutputStream captured = new ByteArrayOutputStream();
        System.setOut(new PrintStream(captured, true, StandardCharsets.UTF_8));
        try {
            ProducerPerformance.main(args.toArray(String[]::new));
        } finally {
            System.setOut(original);
        }
        String out = captured.toString(StandardCharsets.UTF_8);
        Matcher m = SUMMARY.matcher(out);
        Optional<Double> last = Optional.empty();
        while (m.find()) {
            if (Long.parseLong(m.group(1)) == records) {
                last = Optional.of(Double.parseDouble(m.group(2)));
            }
        }
        return last.orElseThrow(() -> new IllegalStateException("no ProducerPerformance summary in:\n" + out));
    }

    private static void createTopic(LocalKafkaBroker broker, String topic) throws Exception {
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrapServers()))) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get(60, TimeUnit.SECONDS);
        }
    }

    private static void deleteTopic(LocalKafkaBroker broker, String topic) throws Exception {
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrapServers()))) {
            admin.deleteTopics(List.of(topic)).all().get(60, TimeUnit.SECONDS);
        }
    }
}
