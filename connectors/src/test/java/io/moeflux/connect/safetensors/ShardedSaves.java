package io.moeflux.connect.safetensors;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.Box;
import io.moeflux.tensor.DType;
import io.moeflux.testing.Pieces;
import io.moeflux.testing.TensorBytes;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Cuts checkpoints into sharded saves as DCP's Hugging Face storage writer lays them out, for tests:
 * one file per rank, {@code shard-R-model-00001-of-00001.safetensors}, pieces described by
 * {@code DCP_SHARDING_INFO}, in torch's header layout or Automodel's.
 */
public final class ShardedSaves {
    private ShardedSaves() {}

    /** A piece of a tensor for one rank: which box of the whole tensor it holds. */
    public record Cut(String tensor, int rank, Box box) {}

    /** Header layouts that exist: torch's ({@code __metadata__} first, tensors by descending dtype then name), Automodel's (plan order, metadata last). */
    public enum Layout { TORCH, AUTOMODEL }

    /**
     * Writes the ranks' files into {@code folder}: every cut's bytes taken from {@code whole} (name ->
     * tensor), each rank's cuts in one file; a rank with no cut writes no file.
     */
    public static void write(Path folder, Map<String, TensorEvent> whole, List<Cut> cuts, Layout layout) throws IOException {
        Files.createDirectories(folder);
        Map<Integer, List<Cut>> byRank = new java.util.TreeMap<>();
        cuts.forEach(c -> byRank.computeIfAbsent(c.rank(), r -> new ArrayList<>()).add(c));
        for (var rank : byRank.entrySet()) {
            List<Cut> mine = new ArrayList<>(rank.getValue());
            if (layout == Layout.TORCH) {
                mine.sort(Comparator.comparing((Cut c) -> whole.get(c.tensor()).tensor().dtype().name()).reversed()
                        .thenComparing(Cut::tensor));
            }
            Map<String, Object> header = new LinkedHashMap<>();
            Map<String, Object> sharding = new LinkedHashMap<>();
            ByteArrayOutputStream data = new ByteArrayOutputStream();
            Map<String, Object> entries = new LinkedHashMap<>();
            for (Cut c : mine) {
                TensorEvent t = whole.get(c.tensor());
                DType dtype = t.tensor().dtype();
                byte[] bytes = Pieces.extract(TensorBytes.of(t.tensor()), t.wholeShape(), dtype.byteSize(), c.box());
                entries.put(c.tensor(), Map.of("dtype", dtype.name(), "shape", c.box().sizes(),
                        "data_offsets", new long[] {data.size(), data.size() + bytes.length}));
                data.writeBytes(bytes);
                sharding.put(c.tensor(), Map.of("saved_offsets", c.box().offsets()));
            }
            // Python's json.dumps with its default separators, as DCP writes it.
            String info = new ObjectMapper().writeValueAsString(sharding).replace(",", ", ").replace(":", ": ");
            Map<String, String> metadata = new LinkedHashMap<>();
            metadata.put("DCP_SHARDING_INFO", info);
            metadata.put("DCP_VERSION", "1.0");
            metadata.put("format", "pt");
            if (layout == Layout.TORCH) {
                header.put("__metadata__", metadata);
                header.putAll(entries);
            } else {
                header.putAll(entries);
                header.put("__metadata__", metadata);
            }
            byte[] json = new ObjectMapper().writeValueAsBytes(header);
            int padded = (json.length + 7) / 8 * 8;
            Path file = folder.resolve(String.format("shard-%05d-model-00001-of-00001.safetensors", rank.getKey() + 1));
            try (OutputStream out = Files.newOutputStream(file)) {
                out.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(padded).array());
                out.write(json);
                out.write(" ".repeat(padded - json.length).getBytes(StandardCharsets.US_ASCII));
                data.writeTo(out);
            }
        }
    }

    /**
     * A grouped expert tensor of {@code shape} in {@code [e, c, 0]} boxes for four ranks: two ranges of
     * experts, each split in two along the middle dimension.
     */
    public static List<Cut> groupedBoxes(String tensor, long[] shape) {
        List<Cut> cuts = new ArrayList<>();
        for (int i = 0; i < 4; i++) {
            long e0 = (i / 2) * (shape[0] / 2);
            long c0 = (i % 2) * (shape[1] / 2);
            cuts.add(new Cut(tensor, i, new Box(new long[] {e0, c0, 0},
                    new long[] {i / 2 == 0 ? shape[0] / 2 : shape[0] - shape[0] / 2, i % 2 == 0 ? shape[1] / 2 : shape[1] - shape[1] / 2,
                            shape[2]})));
        }
        return cuts;
    }

    /** Rows of dimension {@code dim} of a tensor of {@code shape}, split among {@code ranks} ranks as FSDP does (the last ones may get none). */
    public static List<Cut> rows(String tensor, long[] shape, int dim, int ranks) {
        long step = (shape[dim] + ranks - 1) / ranks;
        List<Cut> cuts = new ArrayList<>();
        for (int r = 0; r < ranks; r++) {
            long[] offsets = new long[shape.length];
            long[] sizes = shape.clone();
            offsets[dim] = Math.min(shape[dim], r * step);
            sizes[dim] = Math.min(shape[dim], offsets[dim] + step) - offsets[dim];
            cuts.add(new Cut(tensor, r, new Box(offsets, sizes)));
        }
        return cuts;
    }
}
