package io.moeflux.tensor;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * {@code parent[index][:, colStart:colStart+colCount]^T} of a 3-D parent, computed while it is written:
 * one expert's {@code gate_proj}, {@code up_proj} or {@code down_proj} split out of a grouped tensor.
 *
 * <p>The result is {@code [colCount, rows]} of the parent's type. Each split holds its own handle on
 * the parent, so the grouped tensor is freed when the last split is written or dropped.
 */
public final class TransposedSliceTensor implements Tensor {
    private final Tensor parent;
    private final Releasable parentHandle;
    private final long index;
    private final int rows;
    private final long rowStride;
    private final long colStart;
    private final int colCount;
    private final AtomicBoolean released = new AtomicBoolean();

    /**
     * @param parent       the grouped tensor, 3-D {@code [experts, rows, cols]}
     * @param parentHandle released when this slice is released
     */
    public TransposedSliceTensor(Tensor parent, Releasable parentHandle, long index, long colStart, long colCount) {
        long[] s = parent.shape();
        if (s.length != 3) {
            throw new IllegalArgumentException("expected a 3-D grouped tensor, got " + Shapes.format(s));
        }
        if (index < 0 || index >= s[0] || colStart < 0 || colCount < 0 || colStart + colCount > s[2]) {
            throw new IllegalArgumentException("slice [" + index + "][:, " + colStart + ":" + (colStart + colCount)
                    + "] is outside " + Shapes.format(s));
        }
        this.parent = parent;
        this.parentHandle = parentHandle;
        this.index = index;
        this.rows = Math.toIntExact(s[1]);
        this.rowStride = s[2];
        this.colStart = colStart;
        this.colCount = Math.toIntExact(colCount);
    }

    /** The grouped tensor this is a slice of. */
    public Tensor parent() {
        return parent;
    }

    /** The expert slab of {@link #parent()} it takes. */
    public long index() {
        return index;
    }

    /** The first column of the slab it takes. */
    public long colStart() {
        return colStart;
    }

    /** How many columns of the slab it takes. */
    public int colCount() {
        return colCount;
    }

    @Override
    public DType dtype() {
        return parent.dtype();
    }

    @Override
    public long[] shape() {
        return new long[] {colCount, rows};
    }

    @Override
    public void writeTo(ByteSink sink) throws IOException {
        if (released.get()) {
            throw new IllegalStateException("split expert tensor was already released");
        }
        DType t = parent.dtype();
        Tensors.withContiguous(parent, src -> {
            long slabOffset = index * rows * rowStride * t.byteSize();
            Blocking b = Blocking.of(colCount, rows, t);
            try (ScratchBuffers.Pooled scratch = ScratchBuffers.borrow(b.tileRows() * b.rowBytes())) {
                MemorySegment tile = scratch.segment();
                for (int t0 = 0; t0 < colCount; t0 += b.tileRows()) {
                    int tn = Math.min(b.tileRows(), colCount - t0);
                    Transpose.transpose(src, slabOffset, t, rows, rowStride, colStart + t0, tn, tile, 0, t, rows, 0);
                    sink.write(tile.asSlice(0, tn * b.rowBytes()));
                }
            }
            return null;
        });
    }

    @Override
    public void release() {
        if (released.compareAndSet(false, true)) {
            parentHandle.release();
        }
    }

    @Override
    public String toString() {
        return "TransposedSliceTensor" + dtype() + Shapes.format(shape());
    }
}
