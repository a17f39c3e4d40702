package io.moeflux.tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * The one kernel behind expert merge and split: a block of a 2-D matrix, transposed and optionally cast.
 * Callers make one call, {@link #transpose}; the kernel picks its strategy inside (a contiguous block of
 * 16-bit elements goes straight into place four by four in registers; other 16-bit blocks go through heap
 * staging, four by four where the block allows; anything else element by element).
 *
 * <p>Source: a row-major {@code [rows, rowStride]} matrix of {@code srcType} at {@code srcOffset} bytes
 * into {@code src}; the block is columns {@code [colStart, colStart + colCount)} of every row.
 * Destination: a row-major block of {@code colCount} rows of {@code dstStride} elements of
 * {@code dstType}; source column {@code colStart + r} becomes destination row {@code r}, written at
 * columns {@code [dstColOffset, dstColOffset + rows)}. Other destination columns are left alone, so
 * {@code concat(gate^T, up^T)} is two calls into the same block.
 *
 * <p>Bytes move through heap arrays: the gather reads {@code colCount} contiguous elements per source
 * row with bulk copies, the scatter writes destination rows contiguously, and the JIT vectorises both,
 * which is several times faster than element-wise segment access.
 */
public final class Transpose {
    private static final long LOW16 = 0x0000FFFF0000FFFFL;
    private static final long HIGH16 = 0xFFFF0000FFFF0000L;
    private static final long LOW32 = 0x00000000FFFFFFFFL;
    private static final long HIGH32 = 0xFFFFFFFF00000000L;

    private final short[] in16;
    private final short[] out16;
    private final long[] in64;
    private final long[] out64;
    private boolean stagedInLongs;
    private int stagedStrideLongs;
    /**
     * Staged rows are padded by one cache line: destination rows of 4096 elements are 8 KB apart, and
     * scattering into 64 rows at a power-of-two stride thrashes the cache's sets.
     */
    private static final int PAD_LONGS = 8;
    private final int maxRows;
    private final int maxCols;
    private final int maxOutElements;

    /**
     * Scratch for blocks of at most {@code maxRows} source rows and {@code maxCols} source columns,
     * staging up to {@code maxOutElements} destination elements between {@link #copyOut16} calls (keep
     * that within L2: a larger staging buffer makes the scatter miss cache); reuse one instance per thread.
     */
    private Transpose(int maxRows, int maxCols, int maxOutElements) {
        this.maxRows = maxRows;
        this.maxCols = maxCols;
        this.maxOutElements = maxOutElements;
        this.in16 = new short[Math.multiplyExact(maxRows, maxCols)];
        this.out16 = new short[maxOutElements];
        this.in64 = new long[(Math.multiplyExact(maxRows, maxCols) + 3) / 4];
        this.out64 = new long[(maxOutElements + 3) / 4 + maxCols * PAD_LONGS];
    }

    /**
     * Columns {@code [colStart, colStart + colCount)} of every row of the row-major {@code [rows, rowStride]}
     * matrix of {@code srcType} at byte {@code srcOffset} of {@code src}, transposed and cast to
     * {@code dstType}: source column {@code colStart + r} becomes row {@code r} of {@code dst} (rows of
     * {@code dstStride} elements from byte {@code dstOffset}), at columns {@code [dstColOffset,
     * dstColOffset + rows)}; other columns of {@code dst} are left alone.
     */
    public static void transpose(MemorySegment src, long srcOffset, DType srcType, int rows, long rowStride, long colStart,
                                 int colCount, MemorySegment dst, long dstOffset, DType dstType, int dstStride, int dstColOffset) {
        boolean sixteenBit = srcType == dstType && srcType.byteSize() == 2;
        if (sixteenBit && colStart == 0 && rowStride == colCount && rows % 4 == 0 && colCount % 4 == 0) {
            // The block is contiguous (a column block): its rows sit in cache together, so it goes straight
            // into place, four by four in registers, without the two copies through heap staging.
            contiguousBlock16(src, srcOffset, rows, colCount, dst, dstOffset, dstStride, dstColOffset);
        } else if (sixteenBit) {
            Transpose kernel = forThisThread(rows, colCount, colCount * dstStride);
            kernel.block16(src, srcOffset, rows, rowStride, colStart, colCount, 0, dstStride, dstColOffset);
            kernel.copyOut16(dst, dstOffset, colCount, rows, dstStride, dstColOffset);
        } else {
            block(src, srcOffset, srcType, rows, rowStride, colStart, colCount, dst, dstOffset, dstType, dstStride, dstColOffset);
        }
    }

    private static final ThreadLocal<Transpose> CACHED = new ThreadLocal<>();

    /**
     * This thread's kernel if its scratch is big enough, else a new one that replaces it: writer
     * threads are pooled, and re-allocating megabytes of scratch per expert slab only feeds the GC.
     * A replacement covers the old one too: gate_and_up and down slabs need scratch of different
     * shapes, each too small for the other, and a thread writing both in turn would otherwise allocate
     * a new kernel per slab (humongous arrays that grew the heap by hundreds of MB in an upload).
     */
    private static Transpose forThisThread(int maxRows, int maxCols, int maxOutElements) {
        Transpose t = CACHED.get();
        if (t == null) {
            t = new Transpose(maxRows, maxCols, maxOutElements);
            CACHED.set(t);
        } else if (t.maxRows < maxRows || t.maxCols < maxCols || t.maxOutElements < maxOutElements) {
            t = new Transpose(Math.max(t.maxRows, maxRows), Math.max(t.maxCols, maxCols),
                    Math.max(t.maxOutElements, maxOutElements));
            CACHED.set(t);
        }
        return t;
    }

    /**
     * Transposes one block of 16-bit elements into the heap staging buffer, at destination row
     * {@code dstRow} (of {@code dstStride} elements), columns {@code [dstColOffset, dstColOffset + rows)}.
     */
    private void block16(MemorySegment src, long srcOffset, int rows, long rowStride, long colStart, int colCount,
                        int dstRow, int dstStride, int dstColOffset) {
        if (rows > maxRows || colCount > maxCols || (long) (dstRow + colCount) * dstStride > maxOutElements) {
            throw new IllegalArgumentException("block " + rows + "x" + colCount + " at row " + dstRow
                    + " exceeds scratch " + maxRows + "x" + maxCols + " (" + maxOutElements + ")");
        }
        if (rows % 4 == 0 && colCount % 4 == 0 && dstStride % 4 == 0 && dstColOffset % 4 == 0) {
            block16x4(src, srcOffset, rows, rowStride, colStart, colCount, dstRow, dstStride, dstColOffset);
            return;
        }
        if (stagedInLongs) {
            throw new IllegalStateException("a staging buffer holds one layout at a time; copy it out first");
        }
        ValueLayout.OfShort s = ValueLayout.JAVA_SHORT_UNALIGNED;
        for (int i = 0; i < rows; i++) {
            MemorySegment.copy(src, s, srcOffset + (i * rowStride + colStart) * 2, in16, i * colCount, colCount);
        }
        final int tile = 64;
        for (int i0 = 0; i0 < rows; i0 += tile) {
            int i1 = Math.min(rows, i0 + tile);
            for (int r = 0; r < colCount; r++) {
                int o = (dstRow + r) * dstStride + dstColOffset;
                for (int i = i0; i < i1; i++) {
                    out16[o + i] = in16[i * colCount + r];
                }
            }
        }
    }

    /**
     * The aligned case, four by four: four source rows of four elements are four longs, transposed in
     * registers with shifts and masks (a 4x4 transpose of 16-bit lanes), so each element costs a
     * quarter of a load and a store. About twice the throughput of the element-wise scatter.
     */
    private void block16x4(MemorySegment src, long srcOffset, int rows, long rowStride, long colStart, int colCount,
                           int dstRow, int dstStride, int dstColOffset) {
        stagedInLongs = true;
        int quads = colCount / 4;
        int strideLongs = dstStride / 4 + PAD_LONGS;
        stagedStrideLongs = strideLongs;
        // Source rows go in bands so the gathered band stays in L1 while it is scattered.
        final int band = 64;
        for (int i0 = 0; i0 < rows; i0 += band) {
            int bandRows = Math.min(band, rows - i0);
            for (int i = 0; i < bandRows; i++) {
                MemorySegment.copy(src, ValueLayout.JAVA_LONG_UNALIGNED, srcOffset + ((i0 + i) * rowStride + colStart) * 2,
                        in64, i * quads, quads);
            }
            for (int i = 0; i < bandRows; i += 4) {
                int base = dstRow * strideLongs + (dstColOffset + i0 + i) / 4;
                for (int q = 0; q < quads; q++) {
                    long a = in64[i * quads + q];
                    long b = in64[(i + 1) * quads + q];
                    long c = in64[(i + 2) * quads + q];
                    long d = in64[(i + 3) * quads + q];
                    long ab02 = (a & LOW16) | ((b & LOW16) << 16);
                    long ab13 = ((a >>> 16) & LOW16) | (b & HIGH16);
                    long cd02 = (c & LOW16) | ((d & LOW16) << 16);
                    long cd13 = ((c >>> 16) & LOW16) | (d & HIGH16);
                    int o = base + 4 * q * strideLongs;
                    out64[o] = (ab02 & LOW32) | (cd02 << 32);
                    out64[o + strideLongs] = (ab13 & LOW32) | (cd13 << 32);
                    out64[o + 2 * strideLongs] = (ab02 >>> 32) | (cd02 & HIGH32);
                    out64[o + 3 * strideLongs] = (ab13 >>> 32) | (cd13 & HIGH32);
                }
            }
        }
    }

    /**
     * A contiguous row-major {@code [rows, colCount]} block of 16-bit elements at {@code srcOffset}, both
     * multiples of 4, transposed straight into {@code dst}: source column {@code r} becomes row {@code r}
     * of {@code dst} (rows of {@code dstStride} elements from {@code dstOffset}), at columns
     * {@code [dstColOffset, dstColOffset + rows)}. A band of the block sits in L1 as it is, and each pass
     * writes four destination rows sequentially.
     *
     * <p>The 4x4 arithmetic is {@link #block16x4}'s, written out again on purpose: that kernel works on
     * heap arrays, and routing it through this one (array-backed segments) made it 15% slower.
     */
    private static void contiguousBlock16(MemorySegment src, long srcOffset, int rows, int colCount,
                                          MemorySegment dst, long dstOffset, int dstStride, int dstColOffset) {
        ValueLayout.OfLong l = ValueLayout.JAVA_LONG_UNALIGNED;
        long srcRow = colCount * 2L;
        long dstRowBytes = dstStride * 2L;
        final int band = 64;
        for (int i0 = 0; i0 < rows; i0 += band) {
            int i1 = Math.min(rows, i0 + band);
            for (int q = 0; q < colCount / 4; q++) {
                long from = srcOffset + q * 8L;
                long to = dstOffset + (4L * q * dstStride + dstColOffset) * 2;
                for (int i = i0; i < i1; i += 4) {
                    long at = from + i * srcRow;
                    long a = src.get(l, at);
                    long b = src.get(l, at + srcRow);
                    long c = src.get(l, at + 2 * srcRow);
                    long d = src.get(l, at + 3 * srcRow);
                    long ab02 = (a & LOW16) | ((b & LOW16) << 16);
                    long ab13 = ((a >>> 16) & LOW16) | (b & HIGH16);
                    long cd02 = (c & LOW16) | ((d & LOW16) << 16);
                    long cd13 = ((c >>> 16) & LOW16) | (d & HIGH16);
                    long out = to + i * 2L;
                    dst.set(l, out, (ab02 & LOW32) | (cd02 << 32));
                    dst.set(l, out + dstRowBytes, (ab13 & LOW32) | (cd13 << 32));
                    dst.set(l, out + 2 * dstRowBytes, (ab02 >>> 32) | (cd02 & HIGH32));
                    dst.set(l, out + 3 * dstRowBytes, (ab13 >>> 32) | (cd13 & HIGH32));
                }
            }
        }
    }

    /**
     * Copies the staged block, {@code colCount} rows of {@code rows} elements at columns
     * {@code [dstColOffset, dstColOffset + rows)}, to the same place in {@code dst} (rows of
     * {@code dstStride} elements from byte {@code dstOffset}).
     */
    private void copyOut16(MemorySegment dst, long dstOffset, int colCount, int rows, int dstStride, int dstColOffset) {
        if (stagedInLongs) {
            for (int r = 0; r < colCount; r++) {
                MemorySegment.copy(out64, r * stagedStrideLongs + dstColOffset / 4, dst, ValueLayout.JAVA_LONG_UNALIGNED,
                        dstOffset + ((long) r * dstStride + dstColOffset) * 2, rows / 4);
            }
            stagedInLongs = false;
        } else if (dstColOffset == 0 && rows == dstStride) {
            MemorySegment.copy(out16, 0, dst, ValueLayout.JAVA_SHORT_UNALIGNED, dstOffset, colCount * rows);
        } else {
            for (int r = 0; r < colCount; r++) {
                MemorySegment.copy(out16, r * dstStride + dstColOffset, dst, ValueLayout.JAVA_SHORT_UNALIGNED,
                        dstOffset + ((long) r * dstStride + dstColOffset) * 2, rows);
            }
        }
    }

    /**
     * The general case, element by element: any element size without a cast, or a cast between
     * floating-point types. Source column {@code colStart + r} becomes row {@code r} of {@code dst}
     * (rows of {@code dstStride} elements), at columns {@code [dstColOffset, dstColOffset + rows)}.
     */
    private static void block(MemorySegment src, long srcOffset, DType srcType, int rows, long rowStride, long colStart,
                             int colCount, MemorySegment dst, long dstOffset, DType dstType, int dstStride, int dstColOffset) {
        if (srcType == dstType) {
            int size = srcType.byteSize();
            for (int r = 0; r < colCount; r++) {
                for (int i = 0; i < rows; i++) {
                    long from = srcOffset + (i * rowStride + colStart + r) * size;
                    long to = dstOffset + ((long) r * dstStride + dstColOffset + i) * size;
                    MemorySegment.copy(src, from, dst, to, size);
                }
            }
            return;
        }
        if (!Numerics.isFloatingPoint(srcType) || !Numerics.isFloatingPoint(dstType)) {
            throw new IllegalArgumentException("cannot cast " + srcType + " to " + dstType);
        }
        for (int r = 0; r < colCount; r++) {
            for (int i = 0; i < rows; i++) {
                float v = read(src, srcOffset + (i * rowStride + colStart + r) * srcType.byteSize(), srcType);
                write(dst, dstOffset + ((long) r * dstStride + dstColOffset + i) * dstType.byteSize(), dstType, v);
            }
        }
    }

    private static float read(MemorySegment seg, long at, DType t) {
        return switch (t) {
            case BF16 -> Numerics.bf16ToFloat(seg.get(ValueLayout.JAVA_SHORT_UNALIGNED, at));
            case F16 -> Float.float16ToFloat(seg.get(ValueLayout.JAVA_SHORT_UNALIGNED, at));
            case F32 -> seg.get(ValueLayout.JAVA_FLOAT_UNALIGNED, at);
            // torch narrows double to float before rounding to a 16-bit type; so do we.
            case F64 -> (float) seg.get(ValueLayout.JAVA_DOUBLE_UNALIGNED, at);
            default -> throw new IllegalArgumentException("not a floating-point type: " + t);
        };
    }

    private static void write(MemorySegment seg, long at, DType t, float v) {
        switch (t) {
            case BF16 -> seg.set(ValueLayout.JAVA_SHORT_UNALIGNED, at, Numerics.floatToBf16(v));
            case F16 -> seg.set(ValueLayout.JAVA_SHORT_UNALIGNED, at, Float.floatToFloat16(v));
            case F32 -> seg.set(ValueLayout.JAVA_FLOAT_UNALIGNED, at, v);
            case F64 -> seg.set(ValueLayout.JAVA_DOUBLE_UNALIGNED, at, v);
            default -> throw new IllegalArgumentException("not a floating-point type: " + t);
        }
    }
}
