package io.moeflux.tensor;

import java.util.Arrays;

/**
 * A box of a row-major tensor: per dimension, where it starts and how many elements it spans. A piece of
 * a tensor is the box it covers; the whole tensor is the box at zero offsets with the tensor's shape.
 */
public record Box(long[] offsets, long[] sizes) {
    public Box {
        if (offsets.length != sizes.length) {
            throw new IllegalArgumentException("a box needs an offset per dimension: offsets " + Shapes.format(offsets)
                    + ", sizes " + Shapes.format(sizes));
        }
        offsets = offsets.clone();
        sizes = sizes.clone();
        for (int d = 0; d < offsets.length; d++) {
            if (offsets[d] < 0 || sizes[d] < 0) {
                throw new IllegalArgumentException("negative offset or size in box " + Box.format(offsets, sizes));
            }
        }
    }

    /** The box of a whole tensor of this shape. */
    public static Box whole(long[] shape) {
        return new Box(new long[shape.length], shape);
    }

    @Override
    public long[] offsets() {
        return offsets.clone();
    }

    @Override
    public long[] sizes() {
        return sizes.clone();
    }

    public int rank() {
        return sizes.length;
    }

    public long offset(int d) {
        return offsets[d];
    }

    public long size(int d) {
        return sizes[d];
    }

    public long end(int d) {
        return offsets[d] + sizes[d];
    }

    public long numel() {
        return Shapes.numel(sizes);
    }

    public boolean isEmpty() {
        return numel() == 0;
    }

    /** Whether the box lies inside a tensor of {@code shape} (an empty box may sit at the far edge). */
    public boolean fitsIn(long[] shape) {
        if (shape.length != rank()) {
            return false;
        }
        for (int d = 0; d < shape.length; d++) {
            if (end(d) > shape[d]) {
                return false;
            }
        }
        return true;
    }

    /** Whether this box is the whole of a tensor of {@code shape}. */
    public boolean covers(long[] shape) {
        return Arrays.equals(sizes, shape) && Arrays.stream(offsets).allMatch(o -> o == 0);
    }

    /** Whether the two boxes share an element. */
    public boolean overlaps(Box other) {
        if (other.rank() != rank() || isEmpty() || other.isEmpty()) {
            return false;
        }
        for (int d = 0; d < rank(); d++) {
            if (offsets[d] >= other.end(d) || other.offsets[d] >= end(d)) {
                return false;
            }
        }
        return true;
    }

    /** The elements both boxes hold. Only for boxes that {@link #overlaps overlap}. */
    public Box intersection(Box other) {
        long[] o = new long[rank()];
        long[] s = new long[rank()];
        for (int d = 0; d < rank(); d++) {
            o[d] = Math.max(offsets[d], other.offsets[d]);
            s[d] = Math.min(end(d), other.end(d)) - o[d];
        }
        return new Box(o, s);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Box b && Arrays.equals(offsets, b.offsets) && Arrays.equals(sizes, b.sizes);
    }

    @Override
    public int hashCode() {
        return 31 * Arrays.hashCode(offsets) + Arrays.hashCode(sizes);
    }

    /** {@code [0:4, 8:16]}: Python's slice notation, as the region would be indexed in torch. */
    @Override
    public String toString() {
        return format(offsets, sizes);
    }

    private static String format(long[] offsets, long[] sizes) {
        StringBuilder sb = new StringBuilder("[");
        for (int d = 0; d < offsets.length; d++) {
            if (d > 0) {
                sb.append(", ");
            }
            sb.append(offsets[d]).append(':').append(offsets[d] + sizes[d]);
        }
        return sb.append(']').toString();
    }
}
