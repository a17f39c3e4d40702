package io.moeflux.serve;

import io.moeflux.pipeline.CheckpointSink;
import io.moeflux.pipeline.Progress;

/** Opens the sink one upload is written to: a folder per checkpoint id, a Kafka checkpoint per id. */
@FunctionalInterface
public interface CheckpointSinks {
    /**
     * A sink for checkpoint {@code id} that reports what it writes to {@code progress}. Throws
     * {@link CheckpointExistsException} when a committed checkpoint already has that id.
     */
    CheckpointSink open(String id, Progress progress);
}
