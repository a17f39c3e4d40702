package io.moeflux.serve;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.moeflux.connect.safetensors.ModelConfigJson;
import io.moeflux.hy3.ConversionLayout;
import io.moeflux.hy3.Hy3Adapter;
import io.moeflux.hy3.Hy3Options;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.TensorInfo;
import io.moeflux.tensor.TransposedRead;
import java.io.IOException;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.regex.PatternSyntaxException;
import reactor.core.publisher.Flux;

/**
 * What one upload is converted with: the model config from its query parameters or else the service's
 * {@code --config}, and its conversion options.
 *
 * @param direction  the conversion
 * @param adapter    the converter, absent when the direction needs none
 * @param descriptor what the sink is told up front: the config to store, no tensor plan (tensors are
 *                   only known as they arrive)
 * @param singleBlob the query's {@code single_blob=true}: the body is one blob holding the whole
 *                   checkpoint, so its header plans the output and the sink writes every tensor straight
 *                   to its final place instead of spooling and laying out at commit
 */
record UploadConfig(Direction direction, Optional<Hy3Adapter> adapter, CheckpointDescriptor descriptor, boolean singleBlob) {
    private static final List<String> MODEL_PARAMETERS = List.of("num_hidden_layers", "num_experts", "moe_intermediate_size");
    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * Throws {@link IllegalArgumentException} naming the parameter that is missing or wrong, or
     * {@link io.moeflux.connect.InvalidCheckpointException} for a config that is not valid.
     */
    static UploadConfig resolve(IngestOptions options, Map<String, List<String>> query) {
        Optional<byte[]> configJson = fromQuery(query).or(options::configJson);
        Hy3Options hy3 = options.hy3Options();
        Optional<String> exclude = single(query, "exclude_key_regex");
        if (exclude.isPresent()) {
            try {
                hy3 = hy3.withExcludeKeyRegex(exclude.get());
            } catch (PatternSyntaxException e) {
                throw new IllegalArgumentException("exclude_key_regex is not a regular expression: " + e.getDescription());
            }
        }
        Optional<Hy3Adapter> adapter = Optional.empty();
        if (options.direction().needsModelConfig()) {
            byte[] json = configJson.orElseThrow(() -> new IllegalArgumentException("direction "
                    + options.direction().cliName() + " needs the model config: start the service with --config,"
                    + " or give the query parameters " + String.join(", ", MODEL_PARAMETERS)));
            adapter = Optional.of(new Hy3Adapter(ModelConfigJson.parse(json, "the model config"), hy3));
        }
        boolean singleBlob = single(query, "single_blob").map(v -> switch (v) {
            case "true", "1" -> true;
            case "false", "0" -> false;
            default -> throw new IllegalArgumentException("single_blob must be true or false, got \"" + v + "\"");
        }).orElse(false);
        return new UploadConfig(options.direction(), adapter, new CheckpointDescriptor(Optional.empty(), configJson), singleBlob);
    }

    /** The conversion of {@code uploaded}, for a sink that {@code placesPieces} or not. */
    Flux<TensorEvent> convert(Flux<TensorEvent> uploaded, boolean placesPieces) {
        return adapter.map(a -> direction.convert(uploaded, a, placesPieces)).orElse(uploaded);
    }

    /** The conversion of one part of a declared checkpoint (see {@link Direction#convertPart}). */
    Flux<TensorEvent> convertPart(Flux<TensorEvent> part) {
        return adapter.map(a -> direction.convertPart(part, a)).orElse(part);
    }

    /** Whether each part of a checkpoint of these tensors converts on its own (see {@link Direction#convertsInParts}). */
    boolean convertsInParts(List<TensorInfo> uploaded) {
        return adapter.isEmpty() || direction.convertsInParts(uploaded);
    }

    /** What the conversion makes of {@code uploaded}: its output tensors, and which uploaded tensors pass through. */
    ConversionLayout layout(List<TensorInfo> uploaded) {
        return adapter.map(a -> direction.layout(uploaded, a)).orElseGet(() -> Direction.unchanged(uploaded));
    }

    /** The uploaded tensors the conversion reads transposed (from-hf's expert weights), by name. */
    Map<String, TransposedRead> transposedInputs(List<TensorInfo> uploaded) {
        return direction == Direction.FROM_HF && adapter.isPresent() ? adapter.get().transposedInputsFromHf(uploaded) : Map.of();
    }

    /** A {@code config.json} made of the query's model parameters, when the query has any. */
    private static Optional<byte[]> fromQuery(Map<String, List<String>> query) {
        if (MODEL_PARAMETERS.stream().noneMatch(query::containsKey)) {
            return Optional.empty();
        }
        ObjectNode config = JSON.createObjectNode();
        for (String name : MODEL_PARAMETERS) {
            config.put(name, positiveInt(query, name));
        }
        if (query.containsKey("hidden_size")) {
            config.put("hidden_size", positiveInt(query, "hidden_size"));
        }
        try {
            return Optional.of(JSON.writerWithDefaultPrettyPrinter().writeValueAsBytes(config));
        } catch (IOException e) {
            throw new IllegalStateException("cannot encode a JSON object of numbers", e);
        }
    }

    private static int positiveInt(Map<String, List<String>> query, String name) {
        String value = single(query, name).orElseThrow(() -> new IllegalArgumentException(
                "the model config in the query needs all of " + String.join(", ", MODEL_PARAMETERS) + "; " + name + " is missing"));
        try {
            int n = Integer.parseInt(value);
            if (n > 0) {
                return n;
            }
        } catch (NumberFormatException e) {
            // Reported below with the parameter's name.
        }
        throw new IllegalArgumentException(name + " must be a positive integer, got \"" + value + "\"");
    }

    private static Optional<String> single(Map<String, List<String>> query, String name) {
        List<String> values = query.getOrDefault(name, List.of());
        if (values.size() > 1) {
            throw new IllegalArgumentException(name + " is given " + values.size() + " times");
        }
        return values.stream().findFirst();
    }
}
