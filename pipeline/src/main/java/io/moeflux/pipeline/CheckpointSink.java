package io.moeflux.pipeline;

import java.util.Optional;
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

    /**
     * Opens a write of the planned checkpoint that takes it in parts (see {@link PartedWrite}), or
     * nothing when this sink writes a checkpoint from one stream only. A sink that offers it places
     * pieces. Fails as {@link #write} would when the output cannot be made (it exists, say).
     *
     * @param planned the tensors that will arrive, all of them, and the config to store
     */
    default Optional<PartedWrite> writeInParts(CheckpointDescriptor planned) {
        return Optional.empty();
    }
}
