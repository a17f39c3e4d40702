package io.moeflux.connect.kafka;

import io.moeflux.pipeline.CheckpointSource;

/**
 * Reads one checkpoint (or the newest complete one) back from a topic in the moeflux wire format:
 * reassembles tensors from chunks that may interleave across partitions, checks every CRC32C, and
 * completes on the commit records. Gaps, bad checksums, disagreeing duplicates and a missing commit
 * fail with a {@link KafkaCheckpointException} naming the tensor. Reads {@code read_committed}, so
 * aborted transactions are never seen.
 */
public interface KafkaCheckpointSource extends CheckpointSource {
    static KafkaCheckpointSource create(KafkaSourceOptions options) {
        return new ReactorKafkaSource(options);
    }
}
