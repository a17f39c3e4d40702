package io.moeflux.connect.kafka;

import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Consumer;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Schedulers;
import reactor.util.retry.Retry;

/**
 * Scans partition 0 of a topic, which holds a copy of every manifest and commit record, for the
 * newest committed checkpoint and for a checkpoint's manifest. A plain consumer on a blocking-capable
 * thread: a scan reads up to the end offset seen at its start and stops, which Reactor Kafka's
 * endless receive does not express.
 */
final class TopicScanner {
    private static final Duration POLL = Duration.ofMillis(200);

    private final String bootstrapServers;
    private final String topic;
    private final Map<String, Object> overrides;
    private final Duration waitForRecords;
    private final Consumer<String> waiting;

    /**
     * @param waitForRecords how long to keep looking for a manifest or commit record that is not
     *                       visible yet: a reader may start before the publisher, and a transactional
     *                       publish becomes visible to {@code read_committed} readers only once its
     *                       markers are written, shortly after the publisher's commit returns
     * @param waiting        told once what it waits for, when that takes a while
     */
    TopicScanner(String bootstrapServers, String topic, Map<String, Object> overrides, Duration waitForRecords,
            Consumer<String> waiting) {
        this.bootstrapServers = bootstrapServers;
        this.topic = topic;
        this.overrides = overrides;
        this.waitForRecords = waitForRecords;
        this.waiting = waiting;
    }

    /** Not there (yet): retried until {@code waitForRecords} has passed, then reported. */
    private static final class NotVisibleYet extends KafkaCheckpointException {
        /** What the reader waits for, in words for whoever waits with it. */
        final String waitingFor;

        NotVisibleYet(String message, String waitingFor) {
            super(message);
            this.waitingFor = waitingFor;
        }
    }

    /**
     * Scans again until what it looks for is there or {@code waitForRecords} has passed since the
     * first scan, however long each scan takes (a deadline, not a count of tries); says once what it
     * waits for when that takes longer than {@link #SAY_AFTER}.
     */
    private <T> Mono<T> retryUntilVisible(Mono<T> scan) {
        return Mono.defer(() -> {
            long start = System.nanoTime();
            AtomicBoolean said = new AtomicBoolean();
            return scan.retryWhen(Retry.fixedDelay(Long.MAX_VALUE, RETRY_DELAY)
                    .filter(e -> e instanceof NotVisibleYet && System.nanoTime() - start < waitForRecords.toNanos())
                    .doBeforeRetry(signal -> {
                        if (System.nanoTime() - start > SAY_AFTER.toNanos() && said.compareAndSet(false, true)) {
                            waiting.accept("waiting for " + ((NotVisibleYet) signal.failure()).waitingFor + " on topic " + topic
                                    + " (up to " + waitForRecords.toSeconds() + " s)");
                        }
                    }));
        });
    }

    private static final Duration RETRY_DELAY = Duration.ofMillis(250);
    private static final Duration SAY_AFTER = Duration.ofSeconds(3);

    static Map<String, Object> consumerProperties(String bootstrapServers, Map<String, Object> overrides) {
        Map<String, Object> p = new HashMap<>();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrapServers);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        // Aborted transactions (a failed transactional publish) must stay invisible.
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        // Bounds what the consumer holds on the heap: at most this much per fetch, this many records per poll.
        p.put(ConsumerConfig.FETCH_MAX_BYTES_CONFIG, 16 << 20);
        p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 16);
        p.putAll(overrides);
        return p;
    }

    /** The id of the last checkpoint with a commit record. */
    Mono<String> newestCommitted() {
        return Mono.fromCallable(() -> {
            String[] newest = {null};
            scan(record -> {
                if (WireFormat.COMMIT.equals(WireFormat.typeOf(record.headers()))) {
                    newest[0] = WireFormat.text(record.headers(), WireFormat.CHECKPOINT).orElse(null);
                }
                return false;
            });
            if (newest[0] == null) {
                throw new NotVisibleYet("topic " + topic + " holds no complete checkpoint (no commit record)",
                        "a complete checkpoint (a commit record)");
            }
            return newest[0];
        }).subscribeOn(Schedulers.boundedElastic()).transform(this::retryUntilVisible);
    }

    /** A manifest and the timestamp of its first part's record. */
    record Found(WireFormat.Manifest manifest, long timestamp) {}

    /** The manifest of {@code checkpoint}, the first complete copy in partition 0. */
    Mono<Found> manifest(String checkpoint) {
        return Mono.fromCallable(() -> {
            java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
            int[] next = {0};
            long[] timestamp = {0};
            Found[] found = {null};
            scan(record -> {
                var h = record.headers();
                if (!WireFormat.MANIFEST.equals(WireFormat.typeOf(h))
                        || !WireFormat.text(h, WireFormat.CHECKPOINT).map(checkpoint::equals).orElse(false)) {
                    return false;
                }
                String where = "checkpoint " + checkpoint + " on topic " + topic + " (offset " + record.offset() + ")";
                int index = (int) WireFormat.requiredLong(h, WireFormat.CHUNK, where);
                int count = (int) WireFormat.requiredLong(h, WireFormat.CHUNKS, where);
                if (index == 0) {
                    bytes.reset();
                    next[0] = 0;
                    timestamp[0] = record.timestamp();
                }
                if (index != next[0]) {
                    return false;
                }
                bytes.writeBytes(record.value());
                next[0]++;
                if (next[0] == count) {
                    found[0] = new Found(WireFormat.parseManifest(bytes.toByteArray(), where), timestamp[0]);
                    return true;
                }
                return false;
            });
            if (found[0] == null) {
                throw new NotVisibleYet("topic " + topic + " holds no manifest of checkpoint " + checkpoint,
                        "the manifest of checkpoint " + checkpoint);
            }
            return found[0];
        }).subscribeOn(Schedulers.boundedElastic()).transform(this::retryUntilVisible);
    }

    /**
     * Per partition, the first offset at or after {@code timestamp}, or the end of the partition when
     * nothing is that recent yet (a publisher still writing).
     */
    Mono<Map<Integer, Long>> offsetsAt(int partitions, long timestamp) {
        return Mono.fromCallable(() -> {
            Map<TopicPartition, Long> query = new HashMap<>();
            for (int p = 0; p < partitions; p++) {
                query.put(new TopicPartition(topic, p), Math.max(0, timestamp));
            }
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(consumerProperties(bootstrapServers, overrides))) {
                var found = consumer.offsetsForTimes(query);
                var ends = consumer.endOffsets(query.keySet());
                Map<Integer, Long> offsets = new HashMap<>();
                query.keySet().forEach(tp -> offsets.put(tp.partition(),
                        found.get(tp) != null ? found.get(tp).offset() : ends.get(tp)));
                return offsets;
            }
        }).subscribeOn(Schedulers.boundedElastic());
    }

    @FunctionalInterface
    private interface Visitor {
        /** True to stop. */
        boolean visit(ConsumerRecord<byte[], byte[]> record);
    }

    private void scan(Visitor visitor) {
        TopicPartition p0 = new TopicPartition(topic, 0);
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(consumerProperties(bootstrapServers, overrides))) {
            consumer.assign(Set.of(p0));
            consumer.seekToBeginning(Set.of(p0));
            long end = consumer.endOffsets(List.of(p0)).get(p0);
            while (consumer.position(p0) < end) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(POLL)) {
                    if (r.offset() >= end || visitor.visit(r)) {
                        return;
                    }
                }
            }
        }
    }
}
