package io.moeflux.pipeline;

import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/** Where a checkpoint's tensors come from: a safetensors folder, a Kafka topic, an HTTP upload. */
public interface CheckpointSource {
    /** What is known before any tensor data (see {@link CheckpointDescriptor}). */
    Mono<CheckpointDescriptor> describe();

    /**
     * The tensors, honouring demand. The subscriber owns every event it receives and must release it
     * or pass it on; resources behind the stream are freed on complete, error and cancel.
     */
    Flux<TensorEvent> tensors();
}
