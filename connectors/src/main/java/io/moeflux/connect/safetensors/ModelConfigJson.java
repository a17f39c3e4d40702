package io.moeflux.connect.safetensors;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.hy3.Hy3Config;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;

/** Reads the model facts the adapter needs from a Hugging Face {@code config.json}. */
public final class ModelConfigJson {
    private ModelConfigJson() {}

    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * The config's {@code num_hidden_layers} (80 when absent, as the reference adapter assumes),
     * {@code num_experts}, {@code moe_intermediate_size} and {@code hidden_size}; the first three take
     * Hy3-preview's values when absent, and an absent {@code hidden_size} is 0: not checked.
     */
    public static Hy3Config parse(byte[] configJson, String where) {
        JsonNode root;
        try {
            root = JSON.readTree(configJson);
        } catch (JsonProcessingException e) {
            throw new InvalidCheckpointException(where + ": not valid JSON: " + SafetensorsFormat.problem(e));
        } catch (IOException e) {
            throw new InvalidCheckpointException(where + ": not valid JSON: " + e.getMessage());
        }
        if (root == null || !root.isObject()) {
            throw new InvalidCheckpointException(where + ": not a JSON object");
        }
        Hy3Config d = Hy3Config.HY3_PREVIEW;
        return new Hy3Config(
                intField(root, "num_hidden_layers", d.numHiddenLayers(), where),
                intField(root, "num_experts", d.numExperts(), where),
                intField(root, "moe_intermediate_size", d.moeIntermediateSize(), where),
                intField(root, "hidden_size", 0, where));
    }

    /** {@code folder/config.json} when present. */
    public static Optional<byte[]> readBytes(Path folder) throws IOException {
        Optional<Path> p = configFile(folder);
        return p.isPresent() ? Optional.of(Files.readAllBytes(p.get())) : Optional.empty();
    }

    /**
     * {@code config.json} beside the tensors, or in {@code .hf_metadata/}, where NeMo Automodel keeps it
     * beside a sharded (DCP) save.
     */
    private static Optional<Path> configFile(Path folder) {
        Path dir = Files.isDirectory(folder) ? folder : folder.toAbsolutePath().getParent();
        for (Path p : new Path[] {dir.resolve("config.json"), dir.resolve(".hf_metadata").resolve("config.json")}) {
            if (Files.isRegularFile(p)) {
                return Optional.of(p);
            }
        }
        return Optional.empty();
    }

    /** The config of a checkpoint folder (or of the folder a single file sits in); Hy3-preview's facts when it has none. */
    public static Hy3Config read(Path folder) throws IOException {
        Optional<Path> file = configFile(folder);
        return file.isPresent() ? parse(Files.readAllBytes(file.get()), file.get().toString()) : Hy3Config.HY3_PREVIEW;
    }

    private static int intField(JsonNode root, String name, int fallback, String where) {
        JsonNode v = root.get(name);
        if (v == null || v.isNull()) {
            return fallback;
        }
        if (!v.isIntegralNumber() || !v.canConvertToInt()) {
            throw new InvalidCheckpointException(where + ": " + name + " must be an integer, got " + v);
        }
        return v.asInt();
    }
}
