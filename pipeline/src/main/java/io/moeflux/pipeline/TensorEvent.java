package io.moeflux.pipeline;

import io.moeflux.tensor.Box;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.Tensor;
import io.moeflux.tensor.TensorInfo;
import java.util.Objects;

/**
 * One tensor, or one piece of a tensor, flowing through a pipeline under the tensor's fully qualified name.
 *
 * <p>A piece is a box of the whole tensor: {@code tensor} holds the box's elements (its shape is the box's
 * sizes) and the event says where the box starts and the whole tensor's shape, so whoever receives a piece
 * knows the whole tensor's {@link #wholeInfo() type and shape} without having seen the others. Pieces of one
 * tensor may arrive in any order, interleaved with other tensors; a whole tensor is the one-piece case.
 *
 * <p>The event owns its tensor: a stage that drops an event releases it, a stage that transforms it
 * hands the tensor (or what it made of it) on. Reactor's discard hook releases events that are
 * dropped by cancellation or errors ({@link Stages#releaseOnDiscard}).
 */
public record TensorEvent(String fqn, Tensor tensor, Box box, long[] wholeShape) {
    public TensorEvent {
        Objects.requireNonNull(fqn, "fqn");
        Objects.requireNonNull(tensor, "tensor");
        Objects.requireNonNull(box, "box");
        wholeShape = wholeShape.clone();
        long[] sizes = tensor.shape();
        if (!java.util.Arrays.equals(sizes, box.sizes())) {
            throw new IllegalArgumentException(fqn + ": a piece of shape " + Shapes.format(sizes) + " cannot fill box " + box);
        }
        if (!box.fitsIn(wholeShape)) {
            throw new IllegalArgumentException(fqn + ": box " + box + " lies outside the tensor's shape " + Shapes.format(wholeShape));
        }
    }

    /** A whole tensor. */
    public TensorEvent(String fqn, Tensor tensor) {
        this(fqn, tensor, Box.whole(tensor.shape()), tensor.shape());
    }

    /** The piece {@code bytes} of tensor {@code fqn} (of shape {@code wholeShape}) that starts at {@code offsets}. */
    public static TensorEvent piece(String fqn, long[] wholeShape, long[] offsets, Tensor bytes) {
        return new TensorEvent(fqn, bytes, new Box(offsets, bytes.shape()), wholeShape);
    }

    @Override
    public long[] wholeShape() {
        return wholeShape.clone();
    }

    public boolean isWhole() {
        return box.covers(wholeShape);
    }

    /** The whole tensor's name, type and shape, whether this is the whole or a piece. */
    public TensorInfo wholeInfo() {
        return new TensorInfo(fqn, tensor.dtype(), wholeShape);
    }

    public TensorEvent withFqn(String newFqn) {
        return newFqn.equals(fqn) ? this : new TensorEvent(newFqn, tensor, box, wholeShape);
    }

    public void release() {
        tensor.release();
    }

    @Override
    public String toString() {
        String whole = fqn + " " + tensor.dtype() + Shapes.format(wholeShape);
        return isWhole() ? whole : whole + " piece " + box;
    }
}
