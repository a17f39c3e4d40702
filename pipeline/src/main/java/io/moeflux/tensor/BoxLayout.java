package io.moeflux.tensor;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.util.Arrays;
import java.util.List;
import java.util.TreeSet;

/** Where the elements of a box of a row-major tensor lie in the tensor's bytes. */
public final class BoxLayout {
    private BoxLayout() {}

    /** The last dimension in which the box does not span the whole tensor, or -1 for the whole tensor. */
    public static int lastPartialDim(Box box, long[] whole) {
        for (int d = whole.length - 1; d >= 0; d--) {
            if (box.size(d) != whole[d]) {
                return d;
            }
        }
        return -1;
    }

    /**
     * Whether the box is one run of consecutive elements: it spans every dimension after
     * {@code partial} whole, and only one index of every dimension before it.
     */
    public static boolean isContiguous(Box box, long[] whole, int partial) {
        for (int d = 0; d < partial; d++) {
            if (box.size(d) != 1) {
                return false;
            }
        }
        return true;
    }

    /** The index, in elements, of the box's first element in the whole tensor. */
    public static long firstElement(Box box, long[] whole) {
        long index = 0;
        for (int d = 0; d < whole.length; d++) {
            index = index * whole[d] + box.offset(d);
        }
        return index;
    }

    /** Writes {@code bytes} at {@code at}, a byte offset into the whole tensor. */
    @FunctionalInterface
    public interface RunWriter {
        void write(ByteBuffer bytes, long at) throws IOException;
    }

    /**
     * A box that is not contiguous in its tensor: runs of {@code size[partial] * whole[partial+1] * ...}
     * consecutive elements, one per index of the dimensions before {@code partial}. The box's bytes arrive
     * in row-major order, in chunks of any size, and each part of a chunk goes to its run.
     */
    public static final class Strided {
        private final long[] offsets;
        private final long[] sizes;
        private final long[] strides;
        private final int partial;
        private final long runBytes;
        private final long elementBytes;

        public Strided(Box box, long[] whole, long elementBytes) {
            this.offsets = box.offsets();
            this.sizes = box.sizes();
            this.partial = lastPartialDim(box, whole);
            this.elementBytes = elementBytes;
            this.strides = new long[whole.length];
            long stride = 1;
            for (int d = whole.length - 1; d >= 0; d--) {
                strides[d] = stride;
                stride *= whole[d];
            }
            this.runBytes = sizes[partial] * strides[partial] * elementBytes;
        }

        /** Writes {@code chunk}, which starts {@code produced} bytes into the box's row-major bytes. */
        public void write(MemorySegment chunk, long produced, RunWriter out) throws IOException {
            long done = 0;
            while (done < chunk.byteSize()) {
                long run = (produced + done) / runBytes;
                long within = (produced + done) % runBytes;
                long n = Math.min(chunk.byteSize() - done, runBytes - within);
                out.write(chunk.asSlice(done, n).asByteBuffer(), runStart(run) + within);
                done += n;
            }
        }

        /** Byte offset in the whole tensor of run {@code run}: its indices over the dimensions before {@code partial}. */
        private long runStart(long run) {
            long element = offsets[partial] * strides[partial];
            for (int d = partial - 1; d >= 0; d--) {
                long index = run % sizes[d];
                run /= sizes[d];
                element += (offsets[d] + index) * strides[d];
            }
            return element * elementBytes;
        }
    }

    /** More cells than this and a gap is not looked for cell by cell. */
    private static final long MAX_GAP_SEARCH_CELLS = 10_000_000;

    /**
     * A box of {@code whole} that none of {@code arrived} covers, for an error message: cut at every
     * edge of every piece, the grid's first cell outside all of them.
     */
    public static String firstGap(List<Box> arrived, long[] whole) {
        int rank = whole.length;
        long[][] edges = new long[rank][];
        long cells = 1;
        for (int d = 0; d < rank; d++) {
            TreeSet<Long> cuts = new TreeSet<>(List.of(0L, whole[d]));
            for (Box b : arrived) {
                cuts.add(b.offset(d));
                cuts.add(b.end(d));
            }
            edges[d] = cuts.stream().mapToLong(Long::longValue).toArray();
            cells = Math.multiplyExact(cells, Math.max(1, edges[d].length - 1));
        }
        if (cells > MAX_GAP_SEARCH_CELLS) {
            return "(somewhere: too many pieces to name it)";
        }
        int[] cell = new int[rank];
        for (long c = 0; c < cells; c++) {
            long[] o = new long[rank];
            long[] s = new long[rank];
            for (int d = 0; d < rank; d++) {
                o[d] = edges[d][cell[d]];
                s[d] = edges[d][cell[d] + 1] - o[d];
            }
            Box box = new Box(o, s);
            if (!box.isEmpty() && arrived.stream().noneMatch(a -> a.overlaps(box))) {
                return box.toString();
            }
            for (int d = rank - 1; d >= 0 && ++cell[d] == edges[d].length - 1; d--) {
                cell[d] = 0;
            }
        }
        return Arrays.toString(whole);
    }
}
