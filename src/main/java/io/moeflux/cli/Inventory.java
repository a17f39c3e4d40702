package io.moeflux.cli;

import io.moeflux.hy3.Hy3Keys;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.TensorInfo;
import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/** What {@code inspect} reports: every tensor, and counts and bytes per layer, per dtype and overall. */
record Inventory(List<TensorInfo> tensors, Map<Long, Total> byLayer, Total outsideLayers, Map<DType, Total> byDtype,
        Total overall) {
    /** Tensors and bytes of a group. */
    record Total(long tensors, long bytes) {
        Total plus(TensorInfo t) {
            return new Total(tensors + 1, bytes + t.byteSize());
        }

        static final Total NONE = new Total(0, 0);
    }

    static Inventory of(List<TensorInfo> tensors) {
        Map<Long, Total> byLayer = new TreeMap<>();
        Map<DType, Total> byDtype = new EnumMap<>(DType.class);
        Total outside = Total.NONE;
        Total overall = Total.NONE;
        for (TensorInfo t : tensors) {
            var layer = Hy3Keys.layerOf(t.name());
            // A layer number too long for a long is not a layer anyone trained; count it with the rest.
            if (layer.isPresent() && layer.get().length() < 19) {
                byLayer.merge(Long.parseLong(layer.get()), Total.NONE.plus(t), Inventory::sum);
            } else {
                outside = outside.plus(t);
            }
            byDtype.merge(t.dtype(), Total.NONE.plus(t), Inventory::sum);
            overall = overall.plus(t);
        }
        List<TensorInfo> sorted = new ArrayList<>(tensors);
        sorted.sort(Comparator.comparing(TensorInfo::name));
        return new Inventory(List.copyOf(sorted), byLayer, outside, byDtype, overall);
    }

    private static Total sum(Total a, Total b) {
        return new Total(a.tensors + b.tensors, a.bytes + b.bytes);
    }

    void print(PrintWriter out, String path, boolean everyTensor) {
        if (everyTensor) {
            int nameWidth = tensors.stream().mapToInt(t -> Human.printable(t.name()).length()).max().orElse(4);
            out.printf("%-" + nameWidth + "s  %-7s %-22s %15s%n", "TENSOR", "DTYPE", "SHAPE", "BYTES");
            for (TensorInfo t : tensors) {
                out.printf("%-" + nameWidth + "s  %-7s %-22s %15s%n", Human.printable(t.name()), t.dtype(), Shapes.format(t.shape()),
                        Human.count(t.byteSize()));
            }
            out.println();
        }
        out.printf("%-12s %10s %18s%n", "LAYER", "TENSORS", "BYTES");
        byLayer.forEach((layer, total) -> printTotal(out, "layers." + layer, total));
        if (outsideLayers.tensors() > 0) {
            printTotal(out, "(no layer)", outsideLayers);
        }
        out.println();
        out.printf("%-12s %10s %18s%n", "DTYPE", "TENSORS", "BYTES");
        byDtype.forEach((dtype, total) -> printTotal(out, dtype.name(), total));
        out.println();
        out.println(Human.printable(path) + ": " + Human.count(overall.tensors()) + " tensors, " + Human.count(overall.bytes()) + " bytes ("
                + Human.bytes(overall.bytes()) + ") in " + byLayer.size() + " layers");
        out.flush();
    }

    private static void printTotal(PrintWriter out, String label, Total total) {
        out.printf("%-12s %10s %18s%n", label, Human.count(total.tensors()), Human.count(total.bytes()));
    }

    Map<String, Object> json(String path, boolean everyTensor) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("path", path);
        if (everyTensor) {
            m.put("tensors", tensors.stream().map(t -> {
                Map<String, Object> e = new LinkedHashMap<>();
                e.put("name", t.name());
                e.put("dtype", t.dtype().name());
                e.put("shape", t.shape());
                e.put("bytes", t.byteSize());
                return e;
            }).toList());
        }
        List<Map<String, Object>> layers = new ArrayList<>();
        byLayer.forEach((layer, total) -> {
            Map<String, Object> e = new LinkedHashMap<>();
            e.put("layer", layer);
            e.put("tensors", total.tensors());
            e.put("bytes", total.bytes());
            layers.add(e);
        });
        m.put("layers", layers);
        m.put("outside_layers", outsideLayers);
        Map<String, Total> dtypes = new LinkedHashMap<>();
        byDtype.forEach((d, total) -> dtypes.put(d.name(), total));
        m.put("dtypes", dtypes);
        m.put("total", overall);
        return m;
    }
}
