package io.moeflux.testing;

import io.moeflux.tensor.Tensor;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** A tensor's bytes on the heap, for comparing small tensors in tests. */
public final class TensorBytes {
    private TensorBytes() {}

    /** The tensor's bytes in a new heap array, as its writer streams them (fails past 2 GB). */
    public static byte[] of(Tensor t) {
        byte[] out = new byte[Math.toIntExact(t.byteSize())];
        int[] pos = {0};
        try {
            t.writeTo(chunk -> {
                MemorySegment.copy(chunk, ValueLayout.JAVA_BYTE, 0, out, pos[0], (int) chunk.byteSize());
                pos[0] += (int) chunk.byteSize();
            });
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return out;
    }
}
