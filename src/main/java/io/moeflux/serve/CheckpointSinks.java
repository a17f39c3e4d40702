package io.moeflux.serve;

import io.moeflux.pipeline.CheckpointSink;
import io.moeflux.pipeline.Progress;

/** Opens the sink one upload is written to: a folder per checkpoint id, a Kafka checkpoint per id. */
@FunctionalInterface
public interface CheckpointSinks {
    /**
     * A sink for checkpoint {@code id} that reports what it writes to {@code progress}. Its write fails
     * with {@link io.moeflux.connect.OutputExistsException} when a checkpoint with that id is committed
     * already: the service never overwrites one.
     */
    CheckpointSink open(String id, Progress progress);
}
