package io.moeflux.tensor;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.Optional;

/**
 * Another tensor's bytes under another shape of the same number of elements, as torch's {@code reshape}
 * of a contiguous tensor: nothing is copied, and releasing this releases the other.
 */
public final class ReshapedTensor implements Tensor {
    private final Tensor source;
    private final long[] shape;

    public ReshapedTensor(Tensor source, long[] shape) {
        if (Shapes.numel(shape) != Shapes.numel(source.shape())) {
            throw new IllegalArgumentException("cannot reshape " + Shapes.format(source.shape()) + " to " + Shapes.format(shape));
        }
        this.source = source;
        this.shape = shape.clone();
    }

    @Override
    public DType dtype() {
        return source.dtype();
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    @Override
    public void writeTo(ByteSink sink) throws IOException {
        source.writeTo(sink);
    }

    @Override
    public List<ByteRange> byteRanges() {
        return source.byteRanges();
    }

    @Override
    public Optional<MemorySegment> contiguous() {
        return source.contiguous();
    }

    @Override
    public Optional<FileRegion> fileRegion() {
        return source.fileRegion();
    }

    @Override
    public void release() {
        source.release();
    }

    @Override
    public String toString() {
        return "ReshapedTensor" + dtype() + Shapes.format(shape);
    }
}
