package io.moeflux.connect.safetensors;

import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.TensorEvent;
import java.util.Optional;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/** A planned checkpoint whose files exist in its staging folder and wait for their tensors. */
public interface PlannedCheckpoint {
    /**
     * Where a planned tensor's bytes go. A source may write them there itself and then send the tensor
     * as a {@link io.moeflux.tensor.FileRegion} of exactly that place; the sink finds it in place and
     * does not write it again.
     */
    Optional<Placement> placement(String tensorName);

    /** As {@link io.moeflux.pipeline.CheckpointSink#write}: every planned tensor must arrive, once. Call once. */
    Mono<CommitSummary> write(Flux<TensorEvent> events);

    /** Deletes the staging folder unless committed; idempotent, and a no-op after commit. */
    void abort();
}
