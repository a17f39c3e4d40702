package io.moeflux.pipeline;

import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/** Where a checkpoint goes: a safetensors folder, a Kafka topic. */
public interface CheckpointSink {
    /**
     * Writes {@code events} as one checkpoint and commits it when they complete: all of it becomes
     * visible at once, or, on error or cancellation, nothing does. Every event is released once written.
     *
     * @param planned the tensors that will arrive, when known (lets a sink lay out before data flows;
     *                an event that is not in the plan is an error), and the config to store
     */
    Mono<CommitSummary> write(CheckpointDescriptor planned, Flux<TensorEvent> events);

    /**
     * Whether {@link #write} takes pieces of tensors ({@link TensorEvent#box()}), placing each where it
     * belongs; a sink that does not takes whole tensors only, and a converter feeding it keeps them whole.
     */
    default boolean placesPieces() {
        return false;
    }
}
