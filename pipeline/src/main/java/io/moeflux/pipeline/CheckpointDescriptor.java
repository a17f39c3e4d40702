package io.moeflux.pipeline;

import io.moeflux.tensor.TensorInfo;
import java.util.List;
import java.util.Optional;

/**
 * What is known of a checkpoint before its bytes flow.
 *
 * @param tensors    every tensor's name, type and shape, when the source knows them up front (file
 *                   headers, a Kafka manifest record); a sink given them can lay out its files before
 *                   data arrives and write each tensor straight into its final place
 * @param configJson the model's {@code config.json}, to be stored beside the tensors
 */
public record CheckpointDescriptor(Optional<List<TensorInfo>> tensors, Optional<byte[]> configJson) {
    public static final CheckpointDescriptor UNKNOWN = new CheckpointDescriptor(Optional.empty(), Optional.empty());

    public CheckpointDescriptor {
        tensors = tensors.map(List::copyOf);
        configJson = configJson.map(byte[]::clone);
    }

    public CheckpointDescriptor withTensors(List<TensorInfo> infos) {
        return new CheckpointDescriptor(Optional.of(infos), configJson);
    }
}
