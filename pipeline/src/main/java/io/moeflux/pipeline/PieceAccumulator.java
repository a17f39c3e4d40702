package io.moeflux.pipeline;

import io.moeflux.tensor.Box;
import io.moeflux.tensor.BoxLayout;
import io.moeflux.tensor.DenseTensor;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.SpillArea;
import io.moeflux.tensor.Tensor;
import io.moeflux.tensor.TensorInfo;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

/**
 * The keyed accumulator of {@link Stages#gatherPieces}: per tensor, a buffer of the whole tensor that its
 * pieces are copied into, and the boxes that have arrived. One subscription's state; pieces come one at a
 * time, but a cancel's {@link #releaseAll} may come from another thread meanwhile, hence the lock: a piece
 * after it is released rather than gathered.
 */
final class PieceAccumulator {
    private final SpillArea spill;
    private final Map<String, Gathering> pending = new LinkedHashMap<>();
    /** Tensors made whole already: a piece of one is a region that arrived twice. */
    private final Set<String> gathered = new HashSet<>();
    private boolean released;

    PieceAccumulator(SpillArea spill) {
        this.spill = spill;
    }

    private static final class Gathering {
        final TensorInfo whole;
        final DenseTensor buffer;
        final List<Box> arrived = new ArrayList<>();
        long covered;

        Gathering(TensorInfo whole, DenseTensor buffer) {
            this.whole = whole;
            this.buffer = buffer;
        }
    }

    /**
     * Copies the piece into its tensor's buffer and releases it; returns the whole tensor once its pieces
     * cover it. Throws {@link IllegalArgumentException} naming the tensor for a piece that overlaps one
     * before it or disagrees with its type or shape.
     */
    synchronized Optional<TensorEvent> add(TensorEvent piece) {
        try {
            // An empty piece (a trailing rank's) adds nothing, and may come after its tensor is whole and gone.
            if (released || piece.box().isEmpty()) {
                return Optional.empty();
            }
            TensorInfo whole = piece.wholeInfo();
            Gathering g = pending.get(piece.fqn());
            if (g == null && gathered.contains(piece.fqn())) {
                throw new IllegalArgumentException("tensor " + piece.fqn() + ": region " + piece.box()
                        + " arrived twice (after all of the tensor had)");
            }
            if (g == null) {
                g = new Gathering(whole, spill.allocate(whole.dtype(), whole.shape()));
                pending.put(piece.fqn(), g);
            } else if (!g.whole.equals(whole)) {
                throw new IllegalArgumentException("tensor " + piece.fqn() + ": a piece of " + whole + " arrived for " + g.whole);
            }
            for (Box before : g.arrived) {
                if (before.overlaps(piece.box())) {
                    throw new IllegalArgumentException("tensor " + piece.fqn() + ": region " + before.intersection(piece.box())
                            + " arrived twice");
                }
            }
            copy(piece, g.buffer.data());
            g.arrived.add(piece.box());
            g.covered += piece.box().numel();
            if (g.covered < Shapes.numel(whole.shape())) {
                return Optional.empty();
            }
            pending.remove(piece.fqn());
            gathered.add(piece.fqn());
            return Optional.of(new TensorEvent(piece.fqn(), g.buffer));
        } finally {
            piece.release();
        }
    }

    /** Writes the piece's row-major bytes into the runs its box occupies in the whole tensor's bytes. */
    private static void copy(TensorEvent piece, MemorySegment whole) {
        BoxLayout.Strided runs = new BoxLayout.Strided(piece.box(), piece.wholeShape(), piece.tensor().dtype().byteSize());
        try {
            for (Tensor.ByteRange range : piece.tensor().byteRanges()) {
                long[] produced = {range.offset()};
                range.writer().writeTo(chunk -> {
                    runs.write(chunk, produced[0], (bytes, at) -> MemorySegment.copy(MemorySegment.ofBuffer(bytes), 0, whole, at,
                            bytes.remaining()));
                    produced[0] += chunk.byteSize();
                });
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read piece " + piece.box() + " of tensor " + piece.fqn(), e);
        }
    }

    /** Throws, naming a tensor and a region of it, when a tensor's pieces did not all arrive. */
    synchronized void requireNoneLeft() {
        for (Gathering g : pending.values()) {
            throw new IllegalArgumentException("tensor " + g.whole.name() + ": region "
                    + BoxLayout.firstGap(g.arrived.stream().filter(b -> !b.isEmpty()).toList(), g.whole.shape()) + " of "
                    + Shapes.format(g.whole.shape()) + " never arrived (" + g.arrived.size() + " pieces did)");
        }
    }

    /** Releases the buffers of tensors not yet whole. */
    synchronized void releaseAll() {
        released = true;
        pending.values().forEach(g -> g.buffer.release());
        pending.clear();
    }
}
