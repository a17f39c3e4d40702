package io.moeflux.pipeline;

import io.moeflux.tensor.TensorInfo;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * What is known of a checkpoint before its bytes flow.
 *
 * @param tensors     every tensor's name, type and shape, when the source knows them up front (file
 *                    headers, a Kafka manifest record); a sink given them can lay out its files before
 *                    data arrives and write each tensor straight into its final place
 * @param configJson  the model's {@code config.json}, to be stored beside the tensors
 * @param outputFiles which output file (1 to the largest number given) each tensor belongs in, when the
 *                    checkpoint says (a sharded save's {@code fqn_to_file_index_mapping.json}); a folder sink
 *                    follows it instead of filling files up to a size. It names tensors as they are, so
 *                    {@link #withTensors} (a conversion's plan) drops it
 */
public record CheckpointDescriptor(Optional<List<TensorInfo>> tensors, Optional<byte[]> configJson,
        Optional<Map<String, Integer>> outputFiles) {
    public static final CheckpointDescriptor UNKNOWN = new CheckpointDescriptor(Optional.empty(), Optional.empty());

    public CheckpointDescriptor {
        tensors = tensors.map(List::copyOf);
        configJson = configJson.map(byte[]::clone);
        outputFiles = outputFiles.map(Map::copyOf);
    }

    public CheckpointDescriptor(Optional<List<TensorInfo>> tensors, Optional<byte[]> configJson) {
        this(tensors, configJson, Optional.empty());
    }

    public CheckpointDescriptor withTensors(List<TensorInfo> infos) {
        return new CheckpointDescriptor(Optional.of(infos), configJson);
    }

    /** The same checkpoint laid out by size, as when the user asks for a shard size. */
    public CheckpointDescriptor withoutOutputFiles() {
        return new CheckpointDescriptor(tensors, configJson);
    }
}
