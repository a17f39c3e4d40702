package io.moeflux.tensor;

/** Element conversions between floating-point types, bit-exact with PyTorch's CPU casts. */
public final class Numerics {
    private Numerics() {}

    /** float to bfloat16 bits: round to nearest, ties to even; every NaN becomes the canonical 0x7FC0 (as c10::BFloat16). */
    public static short floatToBf16(float f) {
        if (Float.isNaN(f)) {
            return (short) 0x7FC0;
        }
        int bits = Float.floatToRawIntBits(f);
        int rounding = 0x7FFF + ((bits >>> 16) & 1);
        return (short) ((bits + rounding) >>> 16);
    }

    public static float bf16ToFloat(short bits) {
        return Float.intBitsToFloat((bits & 0xFFFF) << 16);
    }

    /** The types expert casts convert between (F64 narrows to float first, as torch does). */
    public static boolean isFloatingPoint(DType t) {
        return t == DType.BF16 || t == DType.F16 || t == DType.F32 || t == DType.F64;
    }
}
