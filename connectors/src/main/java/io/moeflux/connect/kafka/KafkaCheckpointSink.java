package io.moeflux.connect.kafka;

import io.moeflux.pipeline.CheckpointSink;

/**
 * Publishes a checkpoint to a Kafka topic in the moeflux wire format (wire-format.md in this package): a manifest, the
 * tensors as CRC-checked chunks keyed by layer, and a commit record once every chunk is acknowledged.
 * The producer is idempotent, so broker restarts and retries neither lose nor duplicate chunks.
 */
public interface KafkaCheckpointSink extends CheckpointSink {
    static KafkaCheckpointSink create(KafkaSinkOptions options) {
        return new ReactorKafkaSink(options);
    }
}
