package io.moeflux.connect.kafka;

import java.time.Duration;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
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

    /**
     * The id of the last checkpoint with a commit record; for a checkpoint published in parts, the last whose
     * commit records from every part are in.
     */
    Mono<String> newestCommitted() {
        return Mono.fromCallable(() -> {
            String[] newest = {null};
            Map<String, Set<Integer>> committedParts = new HashMap<>();
            scan(record -> {
                if (WireFormat.COMMIT.equals(WireFormat.typeOf(record.headers()))) {
                    String id = WireFormat.text(record.headers(), WireFormat.CHECKPOINT).orElse(null);
                    Optional<KafkaEndpoint.PartOf> part;
                    try {
                        part = WireFormat.parseCommit(record.value(), "checkpoint " + id + " on topic " + topic
                                + " (offset " + record.offset() + ")").part();
                    } catch (KafkaCheckpointException unreadable) {
                        // A record this version cannot read does not stop it finding one it can.
                        return false;
                    }
                    if (part.isEmpty()) {
                        newest[0] = id;
                    } else {
                        Set<Integer> parts = committedParts.computeIfAbsent(id, k -> new HashSet<>());
                        parts.add(part.get().part());
                        if (parts.size() == part.get().parts()) {
                            newest[0] = id;
                        }
                    }
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

    /**
     * A manifest and the timestamp of its first record's first copy; for a checkpoint published in parts,
     * the whole checkpoint every part's manifest makes, the earliest timestamp of them, and how many parts.
     */
    record Found(WireFormat.Manifest manifest, long timestamp, Optional<Integer> parts) {}

    /**
     * The manifest of {@code checkpoint}, the first complete copy in partition 0; for a checkpoint published
     * in parts, the first complete copy of every part's, which must all be there.
     */
    Mono<Found> manifest(String checkpoint) {
        return Mono.fromCallable(() -> {
            Map<String, ManifestRecords> assembling = new HashMap<>();
            Map<Integer, WireFormat.Manifest> parts = new TreeMap<>();
            long[] earliest = {Long.MAX_VALUE};
            Found[] whole = {null};
            int[] partCount = {0};
            scan(record -> {
                var h = record.headers();
                if (!WireFormat.MANIFEST.equals(WireFormat.typeOf(h))
                        || !WireFormat.text(h, WireFormat.CHECKPOINT).map(checkpoint::equals).orElse(false)) {
                    return false;
                }
                String where = "checkpoint " + checkpoint + " on topic " + topic + " (offset " + record.offset() + ")";
                String part = WireFormat.text(h, WireFormat.PART).orElse("");
                ManifestRecords m = assembling.computeIfAbsent(part, k -> new ManifestRecords());
                byte[] complete = m.add(record, where);
                if (complete == null) {
                    return false;
                }
                WireFormat.Manifest parsed = WireFormat.parseManifest(complete, where);
                if (parsed.part().isEmpty()) {
                    whole[0] = new Found(parsed, m.timestamp, Optional.empty());
                    return true;
                }
                partCount[0] = parsed.part().get().parts();
                if (parts.putIfAbsent(parsed.part().get().part(), parsed) == null) {
                    earliest[0] = Math.min(earliest[0], m.timestamp);
                }
                return parts.size() == partCount[0];
            });
            if (whole[0] != null) {
                return whole[0];
            }
            if (parts.isEmpty()) {
                throw new NotVisibleYet("topic " + topic + " holds no manifest of checkpoint " + checkpoint,
                        "the manifest of checkpoint " + checkpoint);
            }
            if (parts.size() < partCount[0]) {
                List<Integer> missing = java.util.stream.IntStream.range(0, partCount[0]).filter(p -> !parts.containsKey(p))
                        .boxed().toList();
                throw new NotVisibleYet("topic " + topic + " holds the manifests of " + parts.size() + " of the " + partCount[0]
                        + " parts of checkpoint " + checkpoint + "; parts " + missing + " have published none",
                        "the manifests of parts " + missing + " of checkpoint " + checkpoint);
            }
            return new Found(PartedManifests.combine(checkpoint, parts), earliest[0], Optional.of(partCount[0]));
        }).subscribeOn(Schedulers.boundedElastic()).transform(this::retryUntilVisible);
    }

    /** The records of one manifest copy being put together, in order, restarting at each record 0. */
    private static final class ManifestRecords {
        final java.io.ByteArrayOutputStream bytes = new java.io.ByteArrayOutputStream();
        int next;
        long timestamp;

        /** The whole manifest once {@code record} completes it, else null. */
        byte[] add(ConsumerRecord<byte[], byte[]> record, String where) {
            int index = (int) WireFormat.requiredLong(record.headers(), WireFormat.CHUNK, where);
            int count = (int) WireFormat.requiredLong(record.headers(), WireFormat.CHUNKS, where);
            if (index == 0) {
                bytes.reset();
                next = 0;
                timestamp = record.timestamp();
            }
            if (index != next) {
                return null;
            }
            bytes.writeBytes(record.value());
            next++;
            return next == count ? bytes.toByteArray() : null;
        }
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
