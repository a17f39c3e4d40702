package io.moeflux.tensor;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.moeflux.testing.Naive;
import io.moeflux.testing.TensorBytes;
import io.moeflux.testing.TrackedTensors;
import java.io.ByteArrayOutputStream;
import java.util.List;
import org.junit.jupiter.api.Test;

class LazyTensorsTest {
    final TrackedTensors t = new TrackedTensors(7);

    @Test
    void stackedTransposeConcatenatesTransposedPartsPerExpert() {
        int experts = 3, inter = 5, hidden = 7;
        List<List<Tensor>> parts = new java.util.ArrayList<>();
        for (int e = 0; e < experts; e++) {
            parts.add(List.of(t.random(DType.BF16, inter, hidden), t.random(DType.BF16, inter, hidden)));
        }
        byte[][][] src = new byte[experts][2][];
        for (int e = 0; e < experts; e++) {
            for (int j = 0; j < 2; j++) {
                src[e][j] = TensorBytes.of(parts.get(e).get(j));
            }
        }
        StackedTransposeTensor merged = new StackedTransposeTensor(parts, DType.BF16);
        assertThat(merged.shape()).containsExactly(experts, hidden, 2 * inter);
        ByteArrayOutputStream expected = new ByteArrayOutputStream();
        for (int e = 0; e < experts; e++) {
            for (int h = 0; h < hidden; h++) {
                for (int j = 0; j < 2; j++) {
                    for (int i = 0; i < inter; i++) {
                        expected.writeBytes(Naive.raw(src[e][j], DType.BF16, hidden, i, h));
                    }
                }
            }
        }
        assertThat(TensorBytes.of(merged)).isEqualTo(expected.toByteArray());
        merged.release();
        assertThat(t.live()).isZero();
    }

    /**
     * The one transposition call writes its block's columns of each destination row and nothing else, on
     * every path: 16-bit blocks that split into 4x4 blocks, 16-bit blocks that do not, and a cast.
     */
    @org.junit.jupiter.params.ParameterizedTest(name = "{0} -> {1}, {2} x {3} of stride {4}, columns {5} + {3}, at {7}")
    @org.junit.jupiter.params.provider.CsvSource({"BF16, BF16, 72, 12, 30, 8, 200, 60", "BF16, BF16, 6, 10, 13, 2, 40, 5",
            "F32, BF16, 8, 4, 9, 3, 20, 12", "BF16, BF16, 64, 64, 64, 0, 64, 0"})
    void transposeWritesItsColumnsOfEachDestinationRowAndNothingElse(DType srcType, DType dstType, int rows, int colCount,
            int rowStride, int colStart, int dstStride, int dstColOffset) {
        DenseTensor matrix = t.random(srcType, rows, rowStride);
        byte[] src = TensorBytes.of(matrix);
        matrix.release();
        byte[] before = new byte[colCount * dstStride * dstType.byteSize()];
        new java.util.Random(3).nextBytes(before);
        java.lang.foreign.MemorySegment dst = java.lang.foreign.MemorySegment.ofArray(before.clone());

        Transpose.transpose(java.lang.foreign.MemorySegment.ofArray(src), 0, srcType, rows, rowStride, colStart, colCount,
                dst, 0, dstType, dstStride, dstColOffset);

        byte[] expected = before.clone();
        for (int r = 0; r < colCount; r++) {
            for (int i = 0; i < rows; i++) {
                byte[] element = srcType == dstType ? Naive.raw(src, srcType, rowStride, i, colStart + r)
                        : Naive.encode(dstType, Naive.get(src, srcType, rowStride, i, colStart + r));
                System.arraycopy(element, 0, expected, (r * dstStride + dstColOffset + i) * dstType.byteSize(), element.length);
            }
        }
        assertThat(dst.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE)).isEqualTo(expected);
    }

    /** Column-blocked parts, filled in pieces across rows and blocks, give the bytes dense parts give. */
    @org.junit.jupiter.params.ParameterizedTest(name = "{0} parts of {1} x {2}")
    @org.junit.jupiter.params.provider.CsvSource({"BF16, 8, 262144", "BF16, 136, 4100", "BF16, 12, 131075", "F32, 8, 131076", "BF16, 5, 7"})
    void stackedTransposeReadsColumnBlockedPartsAsItReadsDenseOnes(DType type, int rows, int cols) throws Exception {
        int width = 2 * rows;
        int blockCols = StackedTransposeTensor.tileRows(cols, width, DType.BF16);
        java.util.Random random = new java.util.Random(cols);
        java.util.List<Tensor> dense = new java.util.ArrayList<>();
        java.util.List<Tensor> blocked = new java.util.ArrayList<>();
        for (int j = 0; j < 2; j++) {
            DenseTensor part = t.random(type, rows, cols);
            dense.add(part);
            java.lang.foreign.MemorySegment memory = java.lang.foreign.Arena.ofAuto().allocate(part.byteSize());
            ColumnBlockedTensor cb = new ColumnBlockedTensor(type, rows, cols, blockCols, memory, () -> {});
            for (long at = 0; at < part.byteSize(); ) {
                long n = Math.min(part.byteSize() - at, 1 + random.nextInt(5000));
                cb.putRowMajor(at, part.data(), at, n);
                at += n;
            }
            assertThat(TensorBytes.of(cb)).as("row-major bytes back").isEqualTo(TensorBytes.of(part));
            blocked.add(cb);
        }
        StackedTransposeTensor fromDense = new StackedTransposeTensor(List.of(dense), DType.BF16);
        StackedTransposeTensor fromBlocks = new StackedTransposeTensor(List.of(blocked), DType.BF16);

        assertThat(TensorBytes.of(fromBlocks)).isEqualTo(TensorBytes.of(fromDense));
        fromDense.release();
        fromBlocks.release();
        assertThat(t.live()).isZero();
    }

    @Test
    void stackedTransposeCastsF32PartsToBf16RoundingToNearestEven() {
        int rows = 4, cols = 3;
        DenseTensor part = t.random(DType.F32, rows, cols);
        byte[] src = TensorBytes.of(part);
        StackedTransposeTensor merged = new StackedTransposeTensor(List.of(List.of(part)), DType.BF16);
        ByteArrayOutputStream expected = new ByteArrayOutputStream();
        for (int c = 0; c < cols; c++) {
            for (int r = 0; r < rows; r++) {
                expected.writeBytes(Naive.encode(DType.BF16, Naive.get(src, DType.F32, cols, r, c)));
            }
        }
        assertThat(TensorBytes.of(merged)).isEqualTo(expected.toByteArray());
        merged.release();
    }

    @Test
    void piecesConcatenateToTheWholeTensor() {
        StackedTransposeTensor merged = new StackedTransposeTensor(List.of(
                List.of(t.random(DType.BF16, 3, 4)), List.of(t.random(DType.BF16, 3, 4))), DType.BF16);
        ByteArrayOutputStream viaPieces = new ByteArrayOutputStream();
        long next = 0;
        for (Tensor.ByteRange p : merged.byteRanges()) {
            assertThat(p.offset()).isEqualTo(next);
            next += p.byteSize();
            try {
                p.writer().writeTo(chunk -> viaPieces.writeBytes(chunk.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE)));
            } catch (java.io.IOException e) {
                throw new AssertionError(e);
            }
        }
        assertThat(next).isEqualTo(merged.byteSize());
        assertThat(viaPieces.toByteArray()).isEqualTo(TensorBytes.of(merged));
        merged.release();
    }

    @Test
    void transposedSliceTakesAColumnRangeOfOneExpert() {
        int n = 2, rows = 4, cols = 6;
        DenseTensor parent = t.random(DType.BF16, n, rows, cols);
        byte[] src = TensorBytes.of(parent);
        RefCounted refs = RefCounted.onLastRelease(parent::release);
        Releasable owner = refs.retain();
        TransposedSliceTensor slice = new TransposedSliceTensor(parent, refs.retain(), 1, 2, 3);
        owner.release();
        assertThat(slice.shape()).containsExactly(3, rows);
        ByteArrayOutputStream expected = new ByteArrayOutputStream();
        for (int c = 2; c < 5; c++) {
            for (int r = 0; r < rows; r++) {
                expected.writeBytes(Naive.raw(src, DType.BF16, cols, rows + r, c));
            }
        }
        assertThat(TensorBytes.of(slice)).isEqualTo(expected.toByteArray());
        assertThat(t.live()).isEqualTo(1);
        slice.release();
        slice.release();
        assertThat(t.live()).isZero();
        assertThatThrownBy(() -> TensorBytes.of(slice)).isInstanceOf(IllegalStateException.class);
    }

    @Test
    void refCountedRunsCleanupOnceAfterTheLastHandle() {
        int[] runs = {0};
        RefCounted r = RefCounted.onLastRelease(() -> runs[0]++);
        Releasable a = r.retain();
        Releasable b = r.retain();
        a.release();
        a.release();
        assertThat(runs[0]).isZero();
        b.release();
        assertThat(runs[0]).isEqualTo(1);
        assertThatThrownBy(r::retain).isInstanceOf(IllegalStateException.class);
    }

    @Test
    void realExpertShapesCrossTileAndChunkBoundariesBothWays() {
        int inter = 1536, hidden = 4096;
        DenseTensor gate = t.random(DType.BF16, inter, hidden);
        DenseTensor up = t.random(DType.BF16, inter, hidden);
        short[] g = shorts(TensorBytes.of(gate));
        short[] u = shorts(TensorBytes.of(up));
        StackedTransposeTensor merged = new StackedTransposeTensor(List.of(List.of(gate, up)), DType.BF16);
        short[] m = shorts(TensorBytes.of(merged));
        for (int h = 0; h < hidden; h += 7) {
            for (int i = 0; i < inter; i += 5) {
                assertThat(m[h * 2 * inter + i]).isEqualTo(g[i * hidden + h]);
                assertThat(m[h * 2 * inter + inter + i]).isEqualTo(u[i * hidden + h]);
            }
        }
        // And back: splitting the merged tensor gives the parts again, bit for bit.
        DenseTensor grouped = Tensors.of(DType.BF16, merged.shape(), TensorBytes.of(merged));
        RefCounted refs = RefCounted.onLastRelease(grouped::release);
        Releasable owner = refs.retain();
        TransposedSliceTensor gateAgain = new TransposedSliceTensor(grouped, refs.retain(), 0, 0, inter);
        TransposedSliceTensor upAgain = new TransposedSliceTensor(grouped, refs.retain(), 0, inter, inter);
        owner.release();
        assertThat(shorts(TensorBytes.of(gateAgain))).isEqualTo(g);
        assertThat(shorts(TensorBytes.of(upAgain))).isEqualTo(u);
        gateAgain.release();
        upAgain.release();
        merged.release();
        assertThat(refs.isReleased()).isTrue();
    }

    @Test
    void castingPathCrossesChunkBoundariesToo() {
        int rows = 1536, cols = 1400;
        DenseTensor part = t.random(DType.F32, rows, cols);
        byte[] src = TensorBytes.of(part);
        StackedTransposeTensor merged = new StackedTransposeTensor(List.of(List.of(part)), DType.BF16);
        byte[] out = TensorBytes.of(merged);
        for (int c = 0; c < cols; c += 13) {
            for (int r = 0; r < rows; r += 11) {
                assertThat(Naive.raw(out, DType.BF16, rows, c, r)).isEqualTo(Naive.encode(DType.BF16, Naive.get(src, DType.F32, cols, r, c)));
            }
        }
        merged.release();
    }

    private static short[] shorts(byte[] b) {
        short[] s = new short[b.length / 2];
        java.nio.ByteBuffer.wrap(b).order(java.nio.ByteOrder.LITTLE_ENDIAN).asShortBuffer().get(s);
        return s;
    }
}
