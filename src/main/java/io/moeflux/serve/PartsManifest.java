package io.moeflux.serve;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.TensorInfo;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;

/**
 * The body of {@code PUT /v1/checkpoints/{id}/manifest}: how many parts the checkpoint comes in and every
 * tensor's name, type and whole shape, in a safetensors header's terms:
 * {@code {"parts": 4, "tensors": {"model.embed_tokens.weight": {"dtype": "BF16", "shape": [120832, 4096]}, ...}}}.
 */
record PartsManifest(int parts, List<TensorInfo> tensors) {
    private static final ObjectMapper JSON =
            JsonMapper.builder().enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION).build();

    /** Throws {@link InvalidCheckpointException} saying what is wrong, naming the tensor. */
    static PartsManifest parse(byte[] body, long maxBytes) {
        if (body.length > maxBytes) {
            throw new InvalidCheckpointException("the manifest has " + body.length + " bytes, over this service's limit of "
                    + maxBytes + " (--max-header-bytes)");
        }
        JsonNode root;
        try {
            root = JSON.readTree(body);
        } catch (JsonProcessingException e) {
            throw new InvalidCheckpointException("the manifest is not valid JSON: " + e.getOriginalMessage());
        } catch (java.io.IOException e) {
            throw new InvalidCheckpointException("the manifest cannot be read: " + e.getMessage());
        }
        if (root == null || !root.isObject()) {
            throw new InvalidCheckpointException("the manifest must be a JSON object with \"parts\" and \"tensors\"");
        }
        JsonNode parts = root.path("parts");
        if (!parts.isIntegralNumber() || !parts.canConvertToInt() || parts.asInt() < 1) {
            throw new InvalidCheckpointException("the manifest's \"parts\" must be a whole number from 1, got " + parts);
        }
        JsonNode tensors = root.path("tensors");
        if (!tensors.isObject() || tensors.isEmpty()) {
            throw new InvalidCheckpointException("the manifest's \"tensors\" must be an object naming one or more tensors");
        }
        List<TensorInfo> infos = new ArrayList<>(tensors.size());
        for (Iterator<Map.Entry<String, JsonNode>> it = tensors.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> f = it.next();
            infos.add(tensor(f.getKey(), f.getValue()));
        }
        return new PartsManifest(parts.asInt(), List.copyOf(infos));
    }

    private static TensorInfo tensor(String name, JsonNode t) {
        String where = "the manifest's tensor " + name;
        if (!t.path("dtype").isTextual()) {
            throw new InvalidCheckpointException(where + " has no \"dtype\"");
        }
        DType dtype;
        try {
            dtype = DType.parse(t.get("dtype").asText());
        } catch (IllegalArgumentException e) {
            throw new InvalidCheckpointException(where + ": " + e.getMessage());
        }
        JsonNode shape = t.path("shape");
        if (!shape.isArray()) {
            throw new InvalidCheckpointException(where + " has no \"shape\" array");
        }
        long[] dims = new long[shape.size()];
        for (int d = 0; d < dims.length; d++) {
            JsonNode v = shape.get(d);
            if (!v.isIntegralNumber() || !v.canConvertToLong() || v.asLong() < 0) {
                throw new InvalidCheckpointException(where + " has shape " + shape + ": expected non-negative integers");
            }
            dims[d] = v.asLong();
        }
        return new TensorInfo(name, dtype, dims);
    }
}
