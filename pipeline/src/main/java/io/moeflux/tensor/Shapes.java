package io.moeflux.tensor;

import java.util.Arrays;

/** Arithmetic on tensor shapes ({@code long[]}, row-major), checked against overflow. */
public final class Shapes {
    private Shapes() {}

    /** Number of elements; throws {@link ArithmeticException} on overflow and {@link IllegalArgumentException} on a negative dimension. */
    public static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException("negative dimension in shape " + Arrays.toString(shape));
            }
            n = Math.multiplyExact(n, d);
        }
        return n;
    }

    /** Bytes of a tensor of this shape and type; throws {@link ArithmeticException} on overflow. */
    public static long byteSize(DType dtype, long[] shape) {
        return Math.multiplyExact(numel(shape), dtype.byteSize());
    }

    /** Throws {@link IllegalArgumentException} unless {@code bytes} is exactly what a tensor of this type and shape holds. */
    static void requireByteSize(DType dtype, long[] shape, long bytes) {
        long expected = byteSize(dtype, shape);
        if (bytes != expected) {
            throw new IllegalArgumentException("a " + dtype + format(shape) + " tensor has " + expected + " bytes, got " + bytes);
        }
    }

    /** {@code [8, 32, 32]}, as safetensors headers and Python print shapes. */
    public static String format(long[] shape) {
        StringBuilder sb = new StringBuilder("[");
        for (int i = 0; i < shape.length; i++) {
            if (i > 0) {
                sb.append(", ");
            }
            sb.append(shape[i]);
        }
        return sb.append(']').toString();
    }
}
