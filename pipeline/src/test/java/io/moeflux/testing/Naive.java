package io.moeflux.testing;

import io.moeflux.tensor.DType;
import io.moeflux.tensor.Numerics;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/** Element-by-element reference implementations of the tensor algebra, written for clarity only. */
public final class Naive {
    private Naive() {}

    /** Element (r, c) of a row-major [rows, cols] matrix as float. */
    public static float get(byte[] m, DType t, int cols, int r, int c) {
        ByteBuffer bb = ByteBuffer.wrap(m).order(ByteOrder.LITTLE_ENDIAN);
        int i = (r * cols + c) * t.byteSize();
        return switch (t) {
            case BF16 -> Numerics.bf16ToFloat(bb.getShort(i));
            case F16 -> Float.float16ToFloat(bb.getShort(i));
            case F32 -> bb.getFloat(i);
            default -> throw new IllegalArgumentException(t.toString());
        };
    }

    /** Raw element bytes (r, c). */
    public static byte[] raw(byte[] m, DType t, int cols, int r, int c) {
        int i = (r * cols + c) * t.byteSize();
        byte[] out = new byte[t.byteSize()];
        System.arraycopy(m, i, out, 0, out.length);
        return out;
    }

    public static byte[] encode(DType t, float v) {
        ByteBuffer bb = ByteBuffer.allocate(t.byteSize()).order(ByteOrder.LITTLE_ENDIAN);
        switch (t) {
            case BF16 -> bb.putShort(Numerics.floatToBf16(v));
            case F16 -> bb.putShort(Float.floatToFloat16(v));
            case F32 -> bb.putFloat(v);
            default -> throw new IllegalArgumentException(t.toString());
        }
        return bb.array();
    }
}
