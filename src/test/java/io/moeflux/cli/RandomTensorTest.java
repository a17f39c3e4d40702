package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.moeflux.tensor.DType;
import io.moeflux.tensor.Tensor;
import io.moeflux.testing.TensorBytes;
import java.io.ByteArrayOutputStream;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.junit.jupiter.api.Test;

class RandomTensorTest {
    @Test
    void piecesWrittenSeparatelyGiveTheSameBytesAsOneWrite() throws Exception {
        // 40 MB: three parallel pieces, the last one short and not a multiple of the chunk size.
        RandomTensor t = new RandomTensor(DType.BF16, new long[] {5, 4_000_001}, 42, "w");
        assertThat(t.byteRanges()).hasSizeGreaterThan(1);
        byte[] whole = TensorBytes.of(t);
        ByteArrayOutputStream joined = new ByteArrayOutputStream();
        for (Tensor.ByteRange p : t.byteRanges()) {
            assertThat(p.offset()).isEqualTo(joined.size());
            p.writer().writeTo(chunk -> joined.writeBytes(chunk.toArray(ValueLayout.JAVA_BYTE)));
        }
        assertThat(joined.toByteArray()).isEqualTo(whole);
    }

    @Test
    void bytesDependOnSeedAndNameOnly() {
        byte[] a = TensorBytes.of(new RandomTensor(DType.BF16, new long[] {3, 5}, 1, "a"));
        assertThat(TensorBytes.of(new RandomTensor(DType.BF16, new long[] {3, 5}, 1, "a"))).isEqualTo(a);
        assertThat(TensorBytes.of(new RandomTensor(DType.BF16, new long[] {3, 5}, 2, "a"))).isNotEqualTo(a);
        assertThat(TensorBytes.of(new RandomTensor(DType.BF16, new long[] {3, 5}, 1, "b"))).isNotEqualTo(a);
    }

    @Test
    void floatingPointValuesAreFiniteAndModest() {
        ByteBuffer bf16 = ByteBuffer.wrap(TensorBytes.of(new RandomTensor(DType.BF16, new long[] {4096}, 3, "x")))
                .order(ByteOrder.LITTLE_ENDIAN);
        while (bf16.hasRemaining()) {
            float v = Float.intBitsToFloat((bf16.getShort() & 0xFFFF) << 16);
            assertThat(Math.abs(v)).isBetween(0x1p-7f, 2f);
        }
        ByteBuffer f32 = ByteBuffer.wrap(TensorBytes.of(new RandomTensor(DType.F32, new long[] {4096}, 3, "x")))
                .order(ByteOrder.LITTLE_ENDIAN);
        while (f32.hasRemaining()) {
            assertThat(Math.abs(f32.getFloat())).isBetween(0x1p-7f, 2f);
        }
        ByteBuffer f16 = ByteBuffer.wrap(TensorBytes.of(new RandomTensor(DType.F16, new long[] {4096}, 3, "x")))
                .order(ByteOrder.LITTLE_ENDIAN);
        while (f16.hasRemaining()) {
            assertThat(Math.abs(Float.float16ToFloat(f16.getShort()))).isBetween(1f, 2f);
        }
    }

    @Test
    void writingAfterReleaseFails() {
        RandomTensor t = new RandomTensor(DType.U8, new long[] {3}, 0, "x");
        t.release();
        assertThatThrownBy(() -> TensorBytes.of(t))
                .isInstanceOf(IllegalStateException.class);
    }
}
