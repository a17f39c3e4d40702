package io.moeflux.connect.kafka;

import io.moeflux.tensor.TensorInfo;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * The whole checkpoint that the manifests of its parts make. A part knows its tensors only as far as its
 * pieces reach, so a tensor's whole shape is the largest reach per dimension over the parts; each part must
 * give a tensor one type and rank. Whether the pieces then cover every tensor exactly once is the sink's
 * check, as they arrive and at its commit.
 */
final class PartedManifests {
    private PartedManifests() {}

    static WireFormat.Manifest combine(String checkpoint, Map<Integer, WireFormat.Manifest> parts) {
        Map<String, TensorInfo> whole = new LinkedHashMap<>();
        Map<String, Integer> firstPart = new LinkedHashMap<>();
        Optional<byte[]> config = Optional.empty();
        for (Map.Entry<Integer, WireFormat.Manifest> part : parts.entrySet()) {
            List<TensorInfo> tensors = part.getValue().tensors().orElseThrow(() -> new KafkaCheckpointException("checkpoint "
                    + checkpoint + ": the manifest of part " + part.getKey() + " lists no tensors, which a part's must"));
            config = config.or(() -> part.getValue().configJson());
            for (TensorInfo t : tensors) {
                TensorInfo seen = whole.get(t.name());
                if (seen == null) {
                    whole.put(t.name(), t);
                    firstPart.put(t.name(), part.getKey());
                    continue;
                }
                if (seen.dtype() != t.dtype() || seen.shape().length != t.shape().length) {
                    throw new KafkaCheckpointException("checkpoint " + checkpoint + ": tensor " + t.name() + " is " + seen
                            + " in part " + firstPart.get(t.name()) + " but " + t + " in part " + part.getKey()
                            + ": pieces of one tensor must have one type and rank");
                }
                long[] shape = seen.shape();
                for (int d = 0; d < shape.length; d++) {
                    shape[d] = Math.max(shape[d], t.shape()[d]);
                }
                whole.put(t.name(), new TensorInfo(t.name(), t.dtype(), shape));
            }
        }
        return new WireFormat.Manifest(checkpoint, Optional.of(new ArrayList<>(whole.values())), config);
    }
}
