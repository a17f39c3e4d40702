package io.moeflux.connect.safetensors;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.util.DefaultIndenter;
import com.fasterxml.jackson.core.util.DefaultPrettyPrinter;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.moeflux.connect.InvalidCheckpointException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/** {@code model.safetensors.index.json}: which shard holds each tensor, and the total tensor bytes. */
record ShardIndex(Map<String, String> weightMap, long totalSize) {
    static final String FILE_NAME = "model.safetensors.index.json";

    private static final ObjectMapper JSON =
            JsonMapper.builder().enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION).build();

    static ShardIndex read(Path file) throws IOException {
        JsonNode root;
        try {
            root = JSON.readTree(Files.readAllBytes(file));
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new InvalidCheckpointException(file + ": not valid JSON: " + SafetensorsFormat.problem(e));
        }
        if (root == null || !root.isObject() || !root.path("weight_map").isObject()) {
            throw new InvalidCheckpointException(file + ": no weight_map object");
        }
        Map<String, String> map = new LinkedHashMap<>();
        root.get("weight_map").fields().forEachRemaining(f -> {
            if (!f.getValue().isTextual()) {
                throw new InvalidCheckpointException(file + ": weight_map entry " + f.getKey() + " is not a file name");
            }
            String shard = f.getValue().asText();
            if (shard.contains("/") || shard.contains("\\") || shard.equals("..") || shard.equals(".")) {
                throw new InvalidCheckpointException(file + ": weight_map entry " + f.getKey() + " points outside the folder: " + shard);
            }
            map.put(f.getKey(), shard);
        });
        if (map.isEmpty()) {
            throw new InvalidCheckpointException(file + ": the weight_map names no tensors");
        }
        JsonNode total = root.path("metadata").path("total_size");
        if (!total.isMissingNode() && !(total.canConvertToExactIntegral() && total.asLong(-1) >= 0)) {
            throw new InvalidCheckpointException(file + ": metadata.total_size is not a byte count: " + total);
        }
        return new ShardIndex(map, total.isMissingNode() ? -1 : total.asLong());
    }

    /** Shard file names in order of first appearance. */
    List<String> shardFiles() {
        return new ArrayList<>(new LinkedHashSet<>(weightMap.values()));
    }

    /** The index must name exactly the tensors the shards hold, each in the shard that holds it. */
    void checkAgainst(List<SafetensorsSource.Shard> shards, Path where) {
        Map<String, String> actual = new HashMap<>();
        long bytes = 0;
        for (SafetensorsSource.Shard s : shards) {
            for (SafetensorsFormat.Entry e : s.header().entries()) {
                actual.put(e.name(), s.file().getFileName().toString());
                bytes += e.byteSize();
            }
        }
        for (Map.Entry<String, String> e : weightMap.entrySet()) {
            String in = actual.get(e.getKey());
            if (in == null) {
                throw new InvalidCheckpointException(where + ": tensor " + e.getKey() + " is indexed in " + e.getValue()
                        + " but no shard holds it");
            }
            if (!in.equals(e.getValue())) {
                throw new InvalidCheckpointException(where + ": tensor " + e.getKey() + " is indexed in " + e.getValue()
                        + " but stored in " + in);
            }
        }
        for (String name : actual.keySet()) {
            if (!weightMap.containsKey(name)) {
                throw new InvalidCheckpointException(where + ": tensor " + name + " in " + actual.get(name)
                        + " is missing from the weight_map");
            }
        }
        if (totalSize >= 0 && totalSize != bytes) {
            throw new InvalidCheckpointException(where + ": metadata.total_size is " + totalSize + " but the shards hold "
                    + bytes + " tensor bytes");
        }
    }

    /** As transformers writes it: {@code json.dumps(index, indent=2, sort_keys=True) + "\n"}. */
    byte[] toJson() {
        ObjectNode root = JSON.createObjectNode();
        root.putObject("metadata").put("total_size", totalSize);
        ObjectNode wm = root.putObject("weight_map");
        new TreeMap<>(weightMap).forEach(wm::put);
        DefaultPrettyPrinter pp = new DefaultPrettyPrinter()
                .withObjectIndenter(new DefaultIndenter("  ", "\n"))
                .withSeparators(com.fasterxml.jackson.core.util.Separators.createDefaultInstance()
                        .withObjectFieldValueSpacing(com.fasterxml.jackson.core.util.Separators.Spacing.AFTER));
        try {
            return (JSON.writer(pp).writeValueAsString(root) + "\n").getBytes(StandardCharsets.UTF_8);
        } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }
}
