package io.moeflux.connect.safetensors;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.tensor.Box;
import io.moeflux.tensor.TensorInfo;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

/**
 * A sharded save, as PyTorch DCP's Hugging Face storage writer makes one: one safetensors file per rank
 * that saved anything, whose tensors are <em>pieces</em>. A file's header gives each piece's shape, and its
 * {@code __metadata__} entry {@code DCP_SHARDING_INFO} (a JSON string) maps every tensor name in the file to
 * {@code {"saved_offsets": [o0, o1, ...]}}: where the piece starts in the whole tensor. Nothing says the
 * whole shape or the number of pieces: a tensor's shape is the largest {@code offset + size} per
 * dimension over its pieces, and an empty piece (size 0, offset at the end of that dimension) is valid.
 *
 * <p>Everything is checked from the headers, before any byte is read: every piece of a tensor has its
 * type, no two overlap, and together they cover the tensor exactly (torch's own consolidation writes
 * zeros for a missing piece and lets the last file win an overlap).
 */
public final class ShardedSave {
    /** The {@code __metadata__} key that makes a safetensors file a piece of a sharded save. */
    static final String SHARDING_INFO = "DCP_SHARDING_INFO";

    private static final ObjectMapper JSON = new ObjectMapper();

    /** Where NeMo Automodel says which output file each tensor belongs in: {@code {"fqn": K, ...}}, K from 1. */
    static final String FILE_INDEX_MAPPING = ".hf_metadata/fqn_to_file_index_mapping.json";

    private ShardedSave() {}

    /**
     * The save's file assignment, when its folder has one: every tensor of {@code tensors} must be in it and
     * every tensor it names must be in the save (a tensor no rank saved would otherwise go unnoticed).
     */
    static Optional<Map<String, Integer>> outputFiles(Path folder, List<TensorInfo> tensors) throws IOException {
        Path file = folder.resolve(FILE_INDEX_MAPPING);
        if (!Files.isDirectory(folder) || !Files.isRegularFile(file)) {
            return Optional.empty();
        }
        JsonNode root;
        try {
            root = JSON.readTree(Files.readAllBytes(file));
        } catch (JsonProcessingException e) {
            throw new InvalidCheckpointException(file + ": not valid JSON: " + e.getOriginalMessage());
        }
        if (root == null || !root.isObject()) {
            throw new InvalidCheckpointException(file + ": not a JSON object of tensor names and file numbers");
        }
        Map<String, Integer> files = new HashMap<>();
        for (Iterator<Map.Entry<String, JsonNode>> it = root.fields(); it.hasNext(); ) {
            Map.Entry<String, JsonNode> f = it.next();
            JsonNode v = f.getValue();
            if (!v.isIntegralNumber() || !v.canConvertToInt() || v.asInt() < 1) {
                throw new InvalidCheckpointException(file + ": tensor " + f.getKey() + " has file number " + v
                        + ": expected an integer from 1");
            }
            files.put(f.getKey(), v.asInt());
        }
        Set<String> saved = new HashSet<>();
        for (TensorInfo t : tensors) {
            saved.add(t.name());
            if (!files.containsKey(t.name())) {
                throw new InvalidCheckpointException(file + " gives no file for tensor " + t.name() + ", which the save holds");
            }
        }
        for (String name : files.keySet()) {
            if (!saved.contains(name)) {
                throw new InvalidCheckpointException(file + " names tensor " + name + ", which no file of the save holds");
            }
        }
        return Optional.of(files);
    }

    /** Whether the file's header says it holds pieces of a sharded save. */
    public static boolean isShard(SafetensorsFormat.Header header) {
        return header.metadata().containsKey(SHARDING_INFO);
    }

    /** Where each of a shard's pieces starts in its whole tensor, by tensor name. */
    static Map<String, long[]> offsets(SafetensorsSource.Shard shard) {
        return offsets(shard.header(), shard.file().toString());
    }

    /**
     * Where each tensor of a file or blob (described as {@code where}) starts in its whole tensor of the
     * declared checkpoint (its tensors by name): its {@code DCP_SHARDING_INFO} offsets, or 0 in every
     * dimension for a file of whole tensors. Throws, naming {@code where} and the tensor, unless every tensor
     * is one the checkpoint declares, of its type and inside its shape.
     */
    public static Map<String, long[]> placesIn(SafetensorsFormat.Header header, String where, Map<String, TensorInfo> declared) {
        Map<String, long[]> offsets = new HashMap<>();
        if (isShard(header)) {
            offsets.putAll(offsets(header, where));
        } else {
            header.entries().forEach(e -> offsets.put(e.name(), new long[e.shape().length]));
        }
        for (SafetensorsFormat.Entry e : header.entries()) {
            checkPiece(where, e, offsets.get(e.name()), declared);
        }
        return offsets;
    }

    private static Map<String, long[]> offsets(SafetensorsFormat.Header header, String where) {
        String info = header.metadata().get(SHARDING_INFO);
        JsonNode root;
        try {
            root = JSON.readTree(info);
        } catch (JsonProcessingException e) {
            throw new InvalidCheckpointException(where + ": " + SHARDING_INFO + " is not valid JSON: " + e.getOriginalMessage());
        }
        if (root == null || !root.isObject()) {
            throw new InvalidCheckpointException(where + ": " + SHARDING_INFO + " is not a JSON object");
        }
        Map<String, long[]> offsets = new HashMap<>();
        for (SafetensorsFormat.Entry e : header.entries()) {
            JsonNode saved = root.path(e.name()).path("saved_offsets");
            if (!saved.isArray()) {
                throw new InvalidCheckpointException(where + ": " + SHARDING_INFO + " gives no saved_offsets for tensor " + e.name());
            }
            if (saved.size() != e.shape().length) {
                throw new InvalidCheckpointException(where + ": tensor " + e.name() + " has " + e.shape().length
                        + " dimensions but " + saved.size() + " saved_offsets");
            }
            long[] o = new long[saved.size()];
            for (int d = 0; d < o.length; d++) {
                JsonNode v = saved.get(d);
                if (!v.canConvertToLong() || !v.isIntegralNumber() || v.asLong() < 0) {
                    throw new InvalidCheckpointException(where + ": tensor " + e.name() + " has saved_offsets " + saved
                            + ": expected non-negative integers");
                }
                o[d] = v.asLong();
            }
            offsets.put(e.name(), o);
        }
        for (Iterator<String> names = root.fieldNames(); names.hasNext(); ) {
            String name = names.next();
            if (!offsets.containsKey(name)) {
                throw new InvalidCheckpointException(where + ": " + SHARDING_INFO + " names tensor " + name
                        + ", which the file does not hold");
            }
        }
        return offsets;
    }

    /**
     * {@code declared}, once every piece of the shards is found to be of one of its tensors, of its type and
     * inside its shape; throws naming the file and tensor otherwise.
     */
    static List<TensorInfo> checkAgainst(List<SafetensorsSource.Shard> shards, List<TensorInfo> declared) {
        Map<String, TensorInfo> byName = new HashMap<>();
        declared.forEach(t -> byName.put(t.name(), t));
        for (SafetensorsSource.Shard s : shards) {
            for (SafetensorsFormat.Entry e : s.header().entries()) {
                checkPiece(s.file().toString(), e, s.pieceOffsets().get(e.name()), byName);
            }
        }
        return declared;
    }

    private static void checkPiece(String where, SafetensorsFormat.Entry e, long[] offsets, Map<String, TensorInfo> declared) {
        TensorInfo t = declared.get(e.name());
        if (t == null) {
            throw new InvalidCheckpointException(where + ": tensor " + e.name() + " is not in the declared checkpoint");
        }
        if (t.dtype() != e.dtype()) {
            throw new InvalidCheckpointException(where + ": tensor " + e.name() + " is " + e.dtype() + " but declared " + t.dtype());
        }
        Box box = new Box(offsets, e.shape());
        if (box.rank() != t.shape().length || !box.fitsIn(t.shape())) {
            throw new InvalidCheckpointException(where + ": tensor " + e.name() + ": piece " + box
                    + " does not fit its declared shape " + Arrays.toString(t.shape()));
        }
    }

    /**
     * The whole tensors the shards' pieces make, in the order they first appear; throws, naming the tensor
     * (and the region, or the files), unless every tensor's pieces agree in type and cover it exactly once.
     */
    static List<TensorInfo> wholeTensors(List<SafetensorsSource.Shard> shards) {
        return PieceCoverage.wholeTensors(pieces(shards), "shard file");
    }

    /** Every piece the shards hold, named by its file. */
    static List<PieceCoverage.Piece> pieces(List<SafetensorsSource.Shard> shards) {
        List<PieceCoverage.Piece> pieces = new ArrayList<>();
        for (SafetensorsSource.Shard s : shards) {
            for (SafetensorsFormat.Entry e : s.header().entries()) {
                pieces.add(new PieceCoverage.Piece(e.name(), e.dtype(), new Box(s.pieceOffsets().get(e.name()), e.shape()),
                        s.file().toString()));
            }
        }
        return pieces;
    }
}
