package io.moeflux.pipeline;

import io.moeflux.tensor.Tensor;
import java.util.Objects;

/**
 * One tensor flowing through a pipeline under its fully qualified name.
 *
 * <p>The event owns its tensor: a stage that drops an event releases it, a stage that transforms it
 * hands the tensor (or what it made of it) on. Reactor's discard hook releases events that are
 * dropped by cancellation or errors ({@link Stages#releaseOnDiscard}).
 */
public record TensorEvent(String fqn, Tensor tensor) {
    public TensorEvent {
        Objects.requireNonNull(fqn, "fqn");
        Objects.requireNonNull(tensor, "tensor");
    }

    public TensorEvent withFqn(String newFqn) {
        return newFqn.equals(fqn) ? this : new TensorEvent(newFqn, tensor);
    }

    public void release() {
        tensor.release();
    }

    @Override
    public String toString() {
        return fqn + " " + tensor.dtype() + io.moeflux.tensor.Shapes.format(tensor.shape());
    }
}
