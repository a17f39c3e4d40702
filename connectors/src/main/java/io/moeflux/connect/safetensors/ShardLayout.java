package io.moeflux.connect.safetensors;

import io.moeflux.tensor.TensorInfo;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Which shard each tensor goes to and where in it: tensors fill shards in natural name order
 * ({@code layers.2} before {@code layers.10}), so a layer stays together, or go to the file the
 * checkpoint assigns them, and are laid out inside each shard in the safetensors writer's order.
 */
final class ShardLayout {
    record Shard(String fileName, byte[] header, List<TensorInfo> tensors, long dataBytes) {
        /** The whole file: header (with its length prefix) and data. */
        long fileBytes() {
            return header.length + dataBytes;
        }
    }

    record Placement(int shard, long fileOffset, TensorInfo info) {}

    private final List<Shard> shards;
    private final Map<String, Placement> placements;
    private final long totalBytes;

    private ShardLayout(List<Shard> shards, Map<String, Placement> placements, long totalBytes) {
        this.shards = shards;
        this.placements = placements;
        this.totalBytes = totalBytes;
    }

    static ShardLayout plan(List<TensorInfo> tensors, long maxShardSize) {
        List<List<TensorInfo>> groups = new ArrayList<>();
        List<TensorInfo> current = new ArrayList<>();
        long size = 0;
        for (TensorInfo t : byName(tensors)) {
            if (!current.isEmpty() && size + t.byteSize() > maxShardSize) {
                groups.add(current);
                current = new ArrayList<>();
                size = 0;
            }
            current.add(t);
            size += t.byteSize();
        }
        groups.add(current);
        List<String> names = new ArrayList<>(groups.size());
        for (int i = 0; i < groups.size(); i++) {
            names.add(groups.size() == 1 ? "model.safetensors" : fileName(i + 1, groups.size()));
        }
        return of(names, groups);
    }

    /**
     * Each tensor in the file {@code fileOf} gives it, K of the largest K given, named
     * {@code model-0000K-of-0000N.safetensors} (one file too, so the index always lists it); a number no
     * tensor is given makes no file.
     */
    static ShardLayout assigned(List<TensorInfo> tensors, Map<String, Integer> fileOf) {
        int count = tensors.stream().mapToInt(t -> fileNumber(fileOf, t)).max().orElse(1);
        Map<Integer, List<TensorInfo>> byFile = new TreeMap<>();
        for (TensorInfo t : byName(tensors)) {
            byFile.computeIfAbsent(fileNumber(fileOf, t), k -> new ArrayList<>()).add(t);
        }
        List<String> names = byFile.keySet().stream().map(k -> fileName(k, count)).toList();
        return of(names, List.copyOf(byFile.values()));
    }

    private static int fileNumber(Map<String, Integer> fileOf, TensorInfo t) {
        Integer k = fileOf.get(t.name());
        if (k == null || k < 1) {
            throw new IllegalArgumentException("tensor " + t.name() + " is given no output file");
        }
        return k;
    }

    private static String fileName(int k, int of) {
        return String.format("model-%05d-of-%05d.safetensors", k, of);
    }

    private static List<TensorInfo> byName(List<TensorInfo> tensors) {
        List<TensorInfo> byName = new ArrayList<>(tensors);
        byName.sort(Comparator.comparing(TensorInfo::name, ShardLayout::compareNatural));
        for (int i = 1; i < byName.size(); i++) {
            if (byName.get(i).name().equals(byName.get(i - 1).name())) {
                throw new IllegalArgumentException("tensor " + byName.get(i).name() + " is planned twice");
            }
        }
        return byName;
    }

    private static ShardLayout of(List<String> names, List<List<TensorInfo>> groups) {
        List<Shard> shards = new ArrayList<>(groups.size());
        Map<String, Placement> placements = new HashMap<>();
        long total = 0;
        for (int i = 0; i < groups.size(); i++) {
            List<TensorInfo> ordered = SafetensorsFormat.fileOrder(groups.get(i));
            byte[] header = SafetensorsFormat.encodeHeader(ordered);
            long offset = header.length;
            for (TensorInfo t : ordered) {
                placements.put(t.name(), new Placement(i, offset, t));
                offset += t.byteSize();
            }
            total += offset - header.length;
            shards.add(new Shard(names.get(i), header, ordered, offset - header.length));
        }
        return new ShardLayout(List.copyOf(shards), placements, total);
    }

    List<Shard> shards() {
        return shards;
    }

    Placement placement(String name) {
        return placements.get(name);
    }

    int tensorCount() {
        return placements.size();
    }

    long totalBytes() {
        return totalBytes;
    }

    ShardIndex index() {
        Map<String, String> weightMap = new HashMap<>();
        placements.forEach((name, p) -> weightMap.put(name, shards.get(p.shard()).fileName()));
        return new ShardIndex(weightMap, totalBytes);
    }

    /** Compares runs of digits by value and everything else by character. */
    static int compareNatural(String a, String b) {
        int i = 0;
        int j = 0;
        while (i < a.length() && j < b.length()) {
            char ca = a.charAt(i);
            char cb = b.charAt(j);
            if (Character.isDigit(ca) && Character.isDigit(cb)) {
                int si = i;
                int sj = j;
                while (i < a.length() && Character.isDigit(a.charAt(i))) {
                    i++;
                }
                while (j < b.length() && Character.isDigit(b.charAt(j))) {
                    j++;
                }
                String da = a.substring(si, i).replaceFirst("^0+(?=\\d)", "");
                String db = b.substring(sj, j).replaceFirst("^0+(?=\\d)", "");
                int c = da.length() != db.length() ? Integer.compare(da.length(), db.length()) : da.compareTo(db);
                if (c != 0) {
                    return c;
                }
                c = Integer.compare(i - si, j - sj);
                if (c != 0) {
                    return c;
                }
            } else {
                if (ca != cb) {
                    return Character.compare(ca, cb);
                }
                i++;
                j++;
            }
        }
        return Integer.compare(a.length() - i, b.length() - j);
    }
}
