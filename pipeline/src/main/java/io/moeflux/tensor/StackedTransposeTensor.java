package io.moeflux.tensor;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * {@code stack_e(concat_j(parts[e][j]^T, dim=-1))}, cast to a target type, computed while it is written.
 *
 * <p>Every part is a 2-D {@code [rows_j, cols]} tensor; expert {@code e}'s slab is {@code [cols, sum_j rows_j]}
 * and the whole tensor is {@code [experts, cols, sum_j rows_j]}. This is the grouped
 * {@code gate_and_up_projs} (parts gate and up) and {@code down_projs} (part down) of the native layout.
 * Nothing is materialised: each slab is produced in row blocks of a few hundred KB, so a 7 GB layer
 * costs a few MB of scratch. The tensor owns its parts and releases them with itself.
 */
public final class StackedTransposeTensor implements Tensor {
    private final List<List<Tensor>> parts;
    private final DType dtype;
    private final int cols;
    private final int width;
    private final int[] partRows;
    private final AtomicBoolean released = new AtomicBoolean();

    /**
     * @param parts  per expert, in output order, the parts to transpose and concatenate; all experts have
     *               parts of the same shapes, each part 2-D with the same number of columns
     * @param dtype  the output type (parts of another floating-point type are cast, round to nearest even)
     */
    public StackedTransposeTensor(List<List<Tensor>> parts, DType dtype) {
        if (parts.isEmpty()) {
            throw new IllegalArgumentException("nothing to stack");
        }
        this.parts = List.copyOf(parts.stream().map(List::copyOf).toList());
        this.dtype = dtype;
        List<Tensor> first = this.parts.getFirst();
        this.partRows = new int[first.size()];
        int c = -1;
        int w = 0;
        for (int j = 0; j < first.size(); j++) {
            long[] s = first.get(j).shape();
            if (s.length != 2) {
                throw new IllegalArgumentException("expert parts must be 2-D, got " + Shapes.format(s));
            }
            if (c >= 0 && s[1] != c) {
                throw new IllegalArgumentException("parts to concatenate disagree in columns: " + c + " vs " + s[1]);
            }
            c = Math.toIntExact(s[1]);
            partRows[j] = Math.toIntExact(s[0]);
            w += partRows[j];
        }
        for (List<Tensor> expert : this.parts) {
            if (expert.size() != first.size()) {
                throw new IllegalArgumentException("every expert needs " + first.size() + " parts");
            }
            for (int j = 0; j < expert.size(); j++) {
                long[] s = expert.get(j).shape();
                if (s.length != 2 || s[0] != partRows[j] || s[1] != c) {
                    throw new IllegalArgumentException("expert part shape " + Shapes.format(s) + " differs from "
                            + Shapes.format(first.get(j).shape()));
                }
            }
        }
        this.cols = c;
        this.width = w;
    }

    @Override
    public DType dtype() {
        return dtype;
    }

    @Override
    public long[] shape() {
        return new long[] {parts.size(), cols, width};
    }

    /**
     * Output rows per tile of a slab of {@code slabRows x slabWidth} elements of {@code dtype}: a part held in
     * column blocks this wide ({@link ColumnBlockedTensor}) is read one block per tile.
     */
    public static int tileRows(int slabRows, int slabWidth, DType dtype) {
        return Blocking.of(slabRows, slabWidth, dtype).tileRows();
    }

    private long slabBytes() {
        return (long) cols * width * dtype.byteSize();
    }

    @Override
    public void writeTo(ByteSink sink) throws IOException {
        for (int e = 0; e < parts.size(); e++) {
            writeSlab(e, sink);
        }
    }

    @Override
    public List<ByteRange> byteRanges() {
        List<ByteRange> ranges = new ArrayList<>(parts.size());
        long slab = slabBytes();
        for (int e = 0; e < parts.size(); e++) {
            int expert = e;
            ranges.add(new ByteRange(e * slab, slab, sink -> writeSlab(expert, sink)));
        }
        return ranges;
    }

    private void writeSlab(int e, ByteSink sink) throws IOException {
        if (released.get()) {
            throw new IllegalStateException("merged tensor was already released");
        }
        List<Tensor> expert = parts.get(e);
        Blocking b = Blocking.of(cols, width, dtype);
        List<MemorySegment> sources = new ArrayList<>(expert.size());
        // Parts held in column blocks one tile wide are read a block per tile; others row-major.
        Tensor.ColumnBlocks[] blocks = new Tensor.ColumnBlocks[expert.size()];
        List<Tensor> temporaries = new ArrayList<>();
        try {
            for (int j = 0; j < expert.size(); j++) {
                Tensor part = expert.get(j);
                var blocked = part.columnBlocks().filter(cb -> cb.blockCols() == b.tileRows());
                var direct = part.contiguous();
                if (blocked.isPresent()) {
                    blocks[j] = blocked.get();
                    sources.add(blocked.get().data());
                } else if (direct.isPresent()) {
                    sources.add(direct.get());
                } else {
                    DenseTensor copy = Tensors.materialize(part);
                    temporaries.add(copy);
                    sources.add(copy.data());
                }
            }
            try (ScratchBuffers.Pooled scratch = ScratchBuffers.borrow(b.tileRows() * b.rowBytes())) {
                MemorySegment tile = scratch.segment();
                for (int t0 = 0; t0 < cols; t0 += b.tileRows()) {
                    int tn = Math.min(b.tileRows(), cols - t0);
                    int colOffset = 0;
                    for (int j = 0; j < expert.size(); j++) {
                        if (blocks[j] != null) {
                            Transpose.transpose(sources.get(j), blocks[j].blockOffset().applyAsLong(t0 / b.tileRows()),
                                    expert.get(j).dtype(), partRows[j], tn, 0, tn, tile, 0, dtype, width, colOffset);
                        } else {
                            Transpose.transpose(sources.get(j), 0, expert.get(j).dtype(), partRows[j], cols, t0, tn, tile, 0, dtype,
                                    width, colOffset);
                        }
                        colOffset += partRows[j];
                    }
                    sink.write(tile.asSlice(0, tn * b.rowBytes()));
                }
            }
        } finally {
            temporaries.forEach(Tensor::release);
        }
    }

    @Override
    public void release() {
        if (released.compareAndSet(false, true)) {
            parts.forEach(expert -> expert.forEach(Tensor::release));
        }
    }

    @Override
    public String toString() {
        return "StackedTransposeTensor" + dtype + Shapes.format(shape());
    }
}
