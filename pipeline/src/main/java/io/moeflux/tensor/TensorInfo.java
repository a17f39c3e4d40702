package io.moeflux.tensor;

import java.util.Arrays;
import java.util.Objects;

/** A tensor's name, type and shape: what a safetensors header says of it, without its bytes. */
public record TensorInfo(String name, DType dtype, long[] shape) {
    public TensorInfo {
        Objects.requireNonNull(name, "name");
        Objects.requireNonNull(dtype, "dtype");
        shape = shape.clone();
        Shapes.byteSize(dtype, shape);
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    public long byteSize() {
        return Shapes.byteSize(dtype, shape);
    }

    public int rank() {
        return shape.length;
    }

    public long dim(int i) {
        return shape[i];
    }

    public TensorInfo withName(String newName) {
        return new TensorInfo(newName, dtype, shape);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof TensorInfo t && name.equals(t.name) && dtype == t.dtype && Arrays.equals(shape, t.shape);
    }

    @Override
    public int hashCode() {
        return Objects.hash(name, dtype, Arrays.hashCode(shape));
    }

    @Override
    public String toString() {
        return name + " " + dtype + Shapes.format(shape);
    }
}
