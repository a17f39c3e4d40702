package io.moeflux.connect.safetensors;

import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.tensor.Box;
import io.moeflux.tensor.BoxLayout;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.TensorInfo;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Whether the pieces of a checkpoint saved or sent by many ranks make whole tensors: the one check behind
 * every reader of pieces (a sharded save's files, a Kafka checkpoint published in parts). Nothing says a
 * tensor's whole shape or how many pieces it has: its shape is the largest {@code offset + size} per
 * dimension over its pieces, and an empty piece (size 0, offset at the end of that dimension) is valid.
 */
public final class PieceCoverage {
    /**
     * One piece of tensor {@code tensor}, held by {@code source} (a file, a part), named in errors.
     */
    public record Piece(String tensor, DType dtype, Box box, String source) {}

    private PieceCoverage() {}

    /**
     * Each tensor as far as its pieces reach (the largest {@code offset + size} per dimension), in the order
     * they first appear; throws {@link InvalidCheckpointException} naming the tensor and both sources unless
     * every tensor's pieces agree in type and rank. For pieces of only some of the ranks (one part of a
     * checkpoint), the reach is what is known of the whole shape.
     */
    public static List<TensorInfo> reach(List<Piece> all) {
        return reach(byTensor(all));
    }

    /**
     * The whole tensors the pieces make, as {@link #reach}; throws {@link InvalidCheckpointException} naming
     * the tensor (and the region, or both sources) unless every tensor's pieces also cover it exactly once.
     *
     * @param holder what holds pieces, in the message for a region none holds ({@code "shard file"})
     */
    public static List<TensorInfo> wholeTensors(List<Piece> all, String holder) {
        Map<String, List<Piece>> pieces = byTensor(all);
        List<TensorInfo> infos = reach(pieces);
        for (TensorInfo whole : infos) {
            List<Piece> list = pieces.get(whole.name());
            long covered = 0;
            List<Box> boxes = new ArrayList<>(list.size());
            for (Piece p : list) {
                for (int i = 0; i < boxes.size(); i++) {
                    if (p.box().overlaps(boxes.get(i))) {
                        throw new InvalidCheckpointException("tensor " + whole.name() + ": region "
                                + p.box().intersection(boxes.get(i)) + " is saved twice, in " + list.get(i).source()
                                + " and " + p.source());
                    }
                }
                boxes.add(p.box());
                covered += p.box().numel();
            }
            if (covered != Shapes.numel(whole.shape())) {
                throw new InvalidCheckpointException("tensor " + whole.name() + ": region " + BoxLayout.firstGap(boxes.stream()
                        .filter(b -> !b.isEmpty()).toList(), whole.shape()) + " of " + Shapes.format(whole.shape())
                        + " is in no " + holder + " (" + list.size() + " pieces are)");
            }
        }
        return infos;
    }

    private static Map<String, List<Piece>> byTensor(List<Piece> all) {
        Map<String, List<Piece>> pieces = new LinkedHashMap<>();
        for (Piece p : all) {
            pieces.computeIfAbsent(p.tensor(), n -> new ArrayList<>()).add(p);
        }
        return pieces;
    }

    private static List<TensorInfo> reach(Map<String, List<Piece>> pieces) {
        List<TensorInfo> infos = new ArrayList<>(pieces.size());
        pieces.forEach((name, list) -> {
            Piece first = list.getFirst();
            long[] shape = new long[first.box().rank()];
            for (Piece p : list) {
                if (p.dtype() != first.dtype()) {
                    throw new InvalidCheckpointException("tensor " + name + " is " + first.dtype() + " in " + first.source()
                            + " but " + p.dtype() + " in " + p.source() + ": pieces of one tensor must have one type");
                }
                if (p.box().rank() != shape.length) {
                    throw new InvalidCheckpointException("tensor " + name + " has " + shape.length + " dimensions in "
                            + first.source() + " but " + p.box().rank() + " in " + p.source());
                }
                for (int d = 0; d < shape.length; d++) {
                    shape[d] = Math.max(shape[d], p.box().end(d));
                }
            }
            infos.add(new TensorInfo(name, first.dtype(), shape));
        });
        return infos;
    }
}
