package io.moeflux.testing;

import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.Box;
import io.moeflux.tensor.Shapes;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** Cuts tensors into pieces and puts pieces back together, element run by element run, for tests. */
public final class Pieces {
    private Pieces() {}

    /**
     * {@code whole} (a tensor or a piece) cut into {@code parts} pieces along {@code dim} (the last ones smaller
     * or empty when it does not divide), each a copy counted by {@code t}; {@code whole} is released.
     */
    public static List<TensorEvent> cut(TrackedTensors t, TensorEvent whole, int dim, int parts) {
        long[] shape = whole.box().sizes();
        long[] base = whole.box().offsets();
        byte[] bytes = TensorBytes.of(whole.tensor());
        int elementBytes = whole.tensor().dtype().byteSize();
        long step = (shape[dim] + parts - 1) / parts;
        List<TensorEvent> out = new ArrayList<>();
        for (int p = 0; p < parts; p++) {
            long[] offsets = new long[shape.length];
            long[] sizes = shape.clone();
            offsets[dim] = Math.min(shape[dim], p * step);
            sizes[dim] = Math.min(shape[dim], offsets[dim] + step) - offsets[dim];
            byte[] piece = extract(bytes, shape, elementBytes, new Box(offsets, sizes));
            for (int d = 0; d < offsets.length; d++) {
                offsets[d] += base[d];
            }
            out.add(TensorEvent.piece(whole.fqn(), whole.wholeShape(), offsets, t.tracked(whole.tensor().dtype(), sizes, piece)));
        }
        whole.release();
        return out;
    }

    /** The bytes of every tensor the events hold whole or in pieces, by name; releases the events. */
    public static Map<String, byte[]> assemble(List<TensorEvent> events) {
        Map<String, byte[]> out = new LinkedHashMap<>();
        for (TensorEvent e : events) {
            long[] shape = e.wholeShape();
            int elementBytes = e.tensor().dtype().byteSize();
            byte[] whole = out.computeIfAbsent(e.fqn(), n -> new byte[Math.toIntExact(Shapes.byteSize(e.tensor().dtype(), shape))]);
            place(whole, shape, elementBytes, e.box(), TensorBytes.of(e.tensor()));
            e.release();
        }
        return out;
    }

    /** The bytes of {@code box} of a row-major tensor of {@code shape}. */
    public static byte[] extract(byte[] whole, long[] shape, int elementBytes, Box box) {
        byte[] piece = new byte[Math.toIntExact(box.numel() * elementBytes)];
        copy(whole, shape, elementBytes, box, piece, true);
        return piece;
    }

    static void place(byte[] whole, long[] shape, int elementBytes, Box box, byte[] piece) {
        copy(whole, shape, elementBytes, box, piece, false);
    }

    /** Element by element over the box, in row-major order. */
    private static void copy(byte[] whole, long[] shape, int elementBytes, Box box, byte[] piece, boolean out) {
        long n = box.numel();
        int rank = shape.length;
        long[] index = new long[rank];
        for (long i = 0; i < n; i++) {
            long at = 0;
            for (int d = 0; d < rank; d++) {
                at = at * shape[d] + box.offset(d) + index[d];
            }
            int w = Math.toIntExact(at * elementBytes);
            int p = Math.toIntExact(i * elementBytes);
            if (out) {
                System.arraycopy(whole, w, piece, p, elementBytes);
            } else {
                System.arraycopy(piece, p, whole, w, elementBytes);
            }
            for (int d = rank - 1; d >= 0 && ++index[d] == box.size(d); d--) {
                index[d] = 0;
            }
        }
    }
}
