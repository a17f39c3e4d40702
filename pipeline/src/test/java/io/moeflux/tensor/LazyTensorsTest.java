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
     * An expert slab held in column blocks, filled in pieces across rows and blocks, writes a column
     * range transposed as the split of the same slab held dense does: blocks of the 16-bit kernel, of
     * widths that are no multiple of 4 and of a 4-byte type.
     */
    @org.junit.jupiter.params.ParameterizedTest(name = "{0} [{1}, {2}], columns {3} + {4}")
    @org.junit.jupiter.params.provider.CsvSource({"BF16, 1000, 600, 300, 300", "BF16, 64, 48, 0, 24", "BF16, 6, 10, 5, 5",
            "F32, 8, 12, 0, 12", "BF16, 4, 4100, 0, 4100"})
    void columnsWrittenTransposedFromBlocksMatchTheSplitOfADenseSlab(DType type, int rows, int cols, int colStart, int colCount)
            throws Exception {
        DenseTensor slab = t.random(type, rows, cols);
        int unit = colStart + colCount == cols ? (colStart == 0 ? cols : colStart) : colCount;
        int blockCols = ColumnBlockedTensor.blockColsFor(type, rows, unit);
        java.lang.foreign.MemorySegment memory = java.lang.foreign.Arena.ofAuto().allocate(slab.byteSize());
        ColumnBlockedTensor blocked = new ColumnBlockedTensor(type, rows, cols, blockCols, memory, () -> {});
        java.util.Random random = new java.util.Random(cols);
        for (long at = 0; at < slab.byteSize(); ) {
            long n = Math.min(slab.byteSize() - at, 1 + random.nextInt(5000));
            blocked.putRowMajor(at, slab.data(), at, n);
            at += n;
        }
        DenseTensor grouped = new DenseTensor(type, new long[] {1, rows, cols}, slab.data(), () -> {});
        TransposedSliceTensor split = new TransposedSliceTensor(grouped, () -> {}, 0, colStart, colCount);
        ByteArrayOutputStream written = new ByteArrayOutputStream();

        blocked.writeColumnsTransposed(colStart, colCount, tile -> written.writeBytes(tile.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE)));

        assertThat(written.toByteArray()).isEqualTo(TensorBytes.of(split));
        slab.release();
        assertThat(t.live()).isZero();
    }

    @Test
    void blocksAreTheWidestThatDivideTheColumnUnitWithinATileAndAMultipleOf4WhenOneFits() {
        assertThat(ColumnBlockedTensor.blockColsFor(DType.BF16, 4096, 1536)).as("Hy3 gate/up: 768 KB tiles of 8 KB rows").isEqualTo(96);
        assertThat(ColumnBlockedTensor.blockColsFor(DType.BF16, 1536, 4096)).as("Hy3 down").isEqualTo(256);
        assertThat(ColumnBlockedTensor.blockColsFor(DType.BF16, 4096, 100)).as("wider than a tile: its widest divisor within one").isEqualTo(20);
        assertThat(ColumnBlockedTensor.blockColsFor(DType.BF16, 4096, 1000)).as("no multiple of 4 above 40 divides 1000 within 96").isEqualTo(40);
        assertThat(ColumnBlockedTensor.blockColsFor(DType.BF16, 4, 7)).isEqualTo(7);
        assertThat(ColumnBlockedTensor.blockColsFor(DType.BF16, 4096, 97)).as("a prime wider than a tile").isEqualTo(1);
    }

    @Test
    void aColumnRangeThatDoesNotStartAndEndAtBlocksIsRefused() {
        ColumnBlockedTensor blocked = new ColumnBlockedTensor(DType.BF16, 2, 10, 4, java.lang.foreign.Arena.ofAuto().allocate(40), () -> {});
        assertThatThrownBy(() -> blocked.writeColumnsTransposed(2, 4, tile -> {})).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("columns [2, 6)");
        assertThatThrownBy(() -> blocked.writeColumnsTransposed(4, 5, tile -> {})).isInstanceOf(IllegalArgumentException.class);
    }

    /** Column-blocked parts, filled in pieces across rows and blocks, give the bytes dense parts give. */
    @org.junit.jupiter.params.ParameterizedTest(name = "{0} parts of {1} x {2}")
    @org.junit.jupiter.params.provider.CsvSource({"BF16, 8, 262144", "BF16, 136, 4100", "BF16, 12, 131075", "F32, 8, 131076", "BF16, 5, 7"})
    void stackedTransposeReadsColumnBlockedPartsAsItReadsDenseOnes(DType type, int rows, int cols) throws Exception {
        int width = 2 * rows;
        int blockCols = StackedTransposeTensor.tileRows(cols, width, DType.BF16);
        java.util.Random random = new java.util.Random(cols);
        List<Tensor> dense = new java.util.ArrayList<>();
        List<Tensor> blocked = new java.util.ArrayList<>();
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
    void columnBlockTransposeWritesItsColumnsOfEachDestinationRowAndNothingElse() {
        int rows = 72, colCount = 12, dstStride = 200, dstColOffset = 60;
        byte[] block = TensorBytes.of(t.random(DType.BF16, rows, colCount));
        byte[] before = new byte[colCount * dstStride * 2];
        new java.util.Random(3).nextBytes(before);
        java.lang.foreign.MemorySegment dst = java.lang.foreign.MemorySegment.ofArray(before.clone());

        Transpose.columnBlock16(java.lang.foreign.MemorySegment.ofArray(block), 0, rows, colCount, dst, 0, dstStride, dstColOffset);

        byte[] expected = before.clone();
        for (int r = 0; r < colCount; r++) {
            for (int i = 0; i < rows; i++) {
                System.arraycopy(Naive.raw(block, DType.BF16, colCount, i, r), 0, expected, (r * dstStride + dstColOffset + i) * 2, 2);
            }
        }
        assertThat(dst.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE)).isEqualTo(expected);
        assertThatThrownBy(() -> Transpose.columnBlock16(java.lang.foreign.MemorySegment.ofArray(block), 0, 6, 12, dst, 0, dstStride, 0))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("6x12");
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
        for (Tensor.Piece p : merged.pieces()) {
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
