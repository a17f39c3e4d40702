package io.moeflux.tensor;

/**
 * Element types of the safetensors format, with their byte sizes.
 *
 * <p>Declaration order is the order of the {@code Dtype} enum in huggingface/safetensors: its writer
 * lays tensors out by descending dtype, then name, so {@link #ordinal()} is part of the file format.
 */
public enum DType {
    BOOL(1),
    U8(1),
    I8(1),
    F8_E5M2(1),
    F8_E4M3(1),
    F8_E8M0(1),
    I16(2),
    U16(2),
    F16(2),
    BF16(2),
    I32(4),
    U32(4),
    F32(4),
    C64(8),
    F64(8),
    I64(8),
    U64(8);

    private final int byteSize;

    DType(int byteSize) {
        this.byteSize = byteSize;
    }

    /** Bytes per element. */
    public int byteSize() {
        return byteSize;
    }

    /** The name safetensors headers use for this type, e.g. {@code "BF16"}. */
    public String safetensorsName() {
        return name();
    }

    /** Parses a safetensors dtype name; throws {@link IllegalArgumentException} naming the bad value. */
    public static DType parse(String name) {
        for (DType d : values()) {
            if (d.name().equals(name)) {
                return d;
            }
        }
        throw new IllegalArgumentException("unknown dtype \"" + name + "\"");
    }

    /** The CLI spelling: {@code bf16}, {@code f16}, {@code f32} and so on. */
    public static DType parseLenient(String name) {
        return parse(name.trim().toUpperCase(java.util.Locale.ROOT));
    }
}
