package io.moeflux.connect.kafka;

import io.moeflux.connect.InvalidCheckpointException;

/**
 * A checkpoint on a topic cannot be read as written: a gap, a bad checksum, a duplicate that
 * disagrees, a missing commit. The message names the checkpoint, topic and tensor.
 */
public class KafkaCheckpointException extends InvalidCheckpointException {
    public KafkaCheckpointException(String message) {
        super(message);
    }
}
