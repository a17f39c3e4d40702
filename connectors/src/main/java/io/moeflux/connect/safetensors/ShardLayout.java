package io.moeflux.connect.safetensors;

import io.moeflux.tensor.TensorInfo;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Which shard each tensor goes to and where in it: tensors fill shards in natural name order
 * ({@code layers.2} before {@code layers.10}), so a layer stays together, and are laid out inside
 * each shard in the safetensors writer's order.
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
        List<TensorInfo> byName = new ArrayList<>(tensors);
        byName.sort(Comparator.comparing(TensorInfo::name, ShardLayout::compareNatural));
        for (int i = 1; i < byName.size(); i++) {
            if (byName.get(i).name().equals(byName.get(i - 1).name())) {
                throw new IllegalArgumentException("tensor " + byName.get(i).name() + " is planned twice");
            }
        }
        List<List<TensorInfo>> groups = new ArrayList<>();
        List<TensorInfo> current = new ArrayList<>();
        long size = 0;
        long total = 0;
        for (TensorInfo t : byName) {
            if (!current.isEmpty() && size + t.byteSize() > maxShardSize) {
                groups.add(current);
                current = new ArrayList<>();
                size = 0;
            }
            current.add(t);
            size += t.byteSize();
            total += t.byteSize();
        }
        groups.add(current);
        List<Shard> shards = new ArrayList<>(groups.size());
        Map<String, Placement> placements = new HashMap<>();
        for (int i = 0; i < groups.size(); i++) {
            String name = groups.size() == 1 ? "model.safetensors"
                    : String.format("model-%05d-of-%05d.safetensors", i + 1, groups.size());
            List<TensorInfo> ordered = SafetensorsFormat.fileOrder(groups.get(i));
            byte[] header = SafetensorsFormat.encodeHeader(ordered);
            long offset = header.length;
            for (TensorInfo t : ordered) {
                placements.put(t.name(), new Placement(i, offset, t));
                offset += t.byteSize();
            }
            shards.add(new Shard(name, header, ordered, offset - header.length));
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
