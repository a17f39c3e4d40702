package io.moeflux.tensor;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.util.Arrays;
import java.util.Optional;
import java.util.concurrent.atomic.AtomicBoolean;

/** A tensor whose bytes are one memory segment: a slice of a mapped file, or memory it owns. */
public final class DenseTensor implements Tensor {
    /** Chunks handed to a sink are capped so progress and cancellation stay responsive on huge tensors. */
    static final long WRITE_CHUNK = 16L << 20;

    private final DType dtype;
    private final long[] shape;
    private final MemorySegment data;
    private final Releasable owner;
    private final FileRegion fileRegion;
    private final AtomicBoolean released = new AtomicBoolean();

    /** {@code data} must hold exactly the tensor's bytes; {@code owner} is released with the tensor. */
    public DenseTensor(DType dtype, long[] shape, MemorySegment data, Releasable owner) {
        this(dtype, shape, data, owner, null);
    }

    /** A tensor that is also an unmodified region of a file ({@code fileRegion} may be null). */
    public DenseTensor(DType dtype, long[] shape, MemorySegment data, Releasable owner, FileRegion fileRegion) {
        this.fileRegion = fileRegion;
        this.dtype = dtype;
        this.shape = shape.clone();
        Shapes.requireByteSize(dtype, this.shape, data.byteSize());
        this.data = data;
        this.owner = owner;
    }

    @Override
    public DType dtype() {
        return dtype;
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    @Override
    public long byteSize() {
        return data.byteSize();
    }

    /** The bytes; valid until released. */
    public MemorySegment data() {
        checkLive();
        return data;
    }

    @Override
    public Optional<MemorySegment> contiguous() {
        return Optional.of(data());
    }

    @Override
    public Optional<FileRegion> fileRegion() {
        checkLive();
        return Optional.ofNullable(fileRegion);
    }

    @Override
    public void writeTo(ByteSink sink) throws IOException {
        checkLive();
        for (long off = 0; off < data.byteSize(); off += WRITE_CHUNK) {
            sink.write(data.asSlice(off, Math.min(WRITE_CHUNK, data.byteSize() - off)));
        }
    }

    @Override
    public void release() {
        if (released.compareAndSet(false, true)) {
            owner.release();
        }
    }

    public boolean isReleased() {
        return released.get();
    }

    private void checkLive() {
        if (released.get()) {
            throw new IllegalStateException("tensor " + dtype + Arrays.toString(shape) + " was already released");
        }
    }

    @Override
    public String toString() {
        return "DenseTensor" + dtype + Shapes.format(shape);
    }
}
