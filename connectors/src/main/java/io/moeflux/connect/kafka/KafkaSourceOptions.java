package io.moeflux.connect.kafka;

import io.moeflux.tensor.SpillArea;
import java.time.Duration;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.function.Consumer;

/**
 * How a checkpoint is read back from a topic.
 *
 * <p>Tune together: memory is about {@code maxReassemblyBytes} plus the consumer's fetch buffers
 * ({@code fetch.max.bytes}, default here 16 MiB, and {@code max.poll.records} records). The
 * reassembly budget must hold the largest tensor; when it is full, reading pauses until the
 * downstream releases tensors, unless nothing is held downstream (then waiting could never end, so
 * the tensors in progress are allowed to exceed it). {@code stallTimeout} must exceed the time the
 * publisher may pause between records (a broker restart, say).
 *
 * @param bootstrapServers   brokers ({@code host:port,...})
 * @param topic              the topic
 * @param checkpointId       the checkpoint to read; empty reads the newest one with a commit record
 * @param maxReassemblyBytes bytes of tensors being reassembled or handed downstream and not yet released
 * @param stallTimeout       how long reading may wait for records it asked for before it fails
 *                           (a missing commit record or chunk at the end of the topic)
 * @param spill              where tensors are reassembled: large ones in unlinked temporary files (page
 *                           cache, evictable), small ones off-heap
 * @param consumerProperties further consumer settings, applied last
 * @param waiting            told, once, what the reader waits for when a manifest or commit record it
 *                           looks for is still not there a few seconds in (it keeps looking for up to
 *                           {@code stallTimeout}): for a message to whoever is waiting too
 */
public record KafkaSourceOptions(String bootstrapServers, String topic, Optional<String> checkpointId,
        long maxReassemblyBytes, Duration stallTimeout, SpillArea spill, Map<String, Object> consumerProperties,
        Consumer<String> waiting) {

    public static final long DEFAULT_MAX_REASSEMBLY_BYTES = 256L << 20;
    public static final Duration DEFAULT_STALL_TIMEOUT = Duration.ofMinutes(2);

    public KafkaSourceOptions {
        Objects.requireNonNull(bootstrapServers, "bootstrapServers");
        Objects.requireNonNull(topic, "topic");
        checkpointId.ifPresent(WireFormat::checkCheckpointId);
        if (maxReassemblyBytes < 1) {
            throw new IllegalArgumentException("maxReassemblyBytes must be positive, got " + maxReassemblyBytes);
        }
        if (stallTimeout.isNegative() || stallTimeout.isZero()) {
            throw new IllegalArgumentException("stallTimeout must be positive, got " + stallTimeout);
        }
        Objects.requireNonNull(spill, "spill");
        Objects.requireNonNull(waiting, "waiting");
        consumerProperties = Map.copyOf(consumerProperties);
    }

    /** Reads from {@code endpoint}: its checkpoint, or the newest complete one. */
    public static KafkaSourceOptions from(KafkaEndpoint endpoint) {
        return new KafkaSourceOptions(endpoint.bootstrapServers(), endpoint.topic(), endpoint.checkpoint(),
                DEFAULT_MAX_REASSEMBLY_BYTES, DEFAULT_STALL_TIMEOUT, SpillArea.inTempDir(), Map.of(), message -> {});
    }

    public KafkaSourceOptions withCheckpointId(String id) {
        return new KafkaSourceOptions(bootstrapServers, topic, Optional.of(id), maxReassemblyBytes, stallTimeout, spill,
                consumerProperties, waiting);
    }

    public KafkaSourceOptions withMaxReassemblyBytes(long bytes) {
        return new KafkaSourceOptions(bootstrapServers, topic, checkpointId, bytes, stallTimeout, spill,
                consumerProperties, waiting);
    }

    public KafkaSourceOptions withStallTimeout(Duration timeout) {
        return new KafkaSourceOptions(bootstrapServers, topic, checkpointId, maxReassemblyBytes, timeout, spill,
                consumerProperties, waiting);
    }

    public KafkaSourceOptions withConsumerProperties(Map<String, Object> properties) {
        return new KafkaSourceOptions(bootstrapServers, topic, checkpointId, maxReassemblyBytes, stallTimeout, spill,
                properties, waiting);
    }

    public KafkaSourceOptions withWaiting(Consumer<String> listener) {
        return new KafkaSourceOptions(bootstrapServers, topic, checkpointId, maxReassemblyBytes, stallTimeout, spill,
                consumerProperties, listener);
    }

    public KafkaSourceOptions withSpill(SpillArea area) {
        return new KafkaSourceOptions(bootstrapServers, topic, checkpointId, maxReassemblyBytes, stallTimeout, area,
                consumerProperties, waiting);
    }
}
