package io.moeflux.tensor;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/** Factories and helpers for {@link Tensor}s. */
public final class Tensors {
    private Tensors() {}

    /**
     * A zero-filled tensor in off-heap memory of its own. A shared arena, because Reactor may release
     * the tensor on another thread than the one that made it.
     */
    public static DenseTensor allocate(DType dtype, long[] shape) {
        Arena arena = Arena.ofShared();
        try {
            MemorySegment seg = arena.allocate(Shapes.byteSize(dtype, shape), 64);
            return new DenseTensor(dtype, shape, seg, arena::close);
        } catch (RuntimeException | Error e) {
            arena.close();
            throw e;
        }
    }

    /** A tensor holding a copy of {@code bytes}. */
    public static DenseTensor of(DType dtype, long[] shape, byte[] bytes) {
        DenseTensor t = allocate(dtype, shape);
        if (bytes.length != t.byteSize()) {
            t.release();
            throw new IllegalArgumentException("a " + dtype + Shapes.format(shape) + " tensor has " + t.byteSize()
                    + " bytes, got " + bytes.length);
        }
        MemorySegment.copy(bytes, 0, t.data(), ValueLayout.JAVA_BYTE, 0, bytes.length);
        return t;
    }

    /** A metadata-only tensor for planning output headers; writing its bytes fails. */
    public static Tensor placeholder(DType dtype, long[] shape) {
        return new Placeholder(dtype, shape.clone());
    }

    /**
     * False for {@link #placeholder}s. A stage that reads bytes to decide something (not only to hand
     * them on) skips that check when the stages plan a layout over placeholders; the conversion proper
     * makes it.
     */
    public static boolean hasBytes(Tensor t) {
        return !(t instanceof Placeholder);
    }

    /** True when both tensors hold the same bytes (their types and shapes are the caller's to compare). */
    public static boolean sameBytes(Tensor a, Tensor b) throws IOException {
        if (a.byteSize() != b.byteSize()) {
            return false;
        }
        return withContiguous(a, x -> withContiguous(b, y -> x.mismatch(y) == -1));
    }

    /** Copies a tensor's bytes into a new dense tensor (its own memory); the argument is not released. */
    public static DenseTensor materialize(Tensor t) throws IOException {
        return copyInto(t, allocate(t.dtype(), t.shape()));
    }

    /**
     * Writes {@code t}'s bytes into {@code out}, a fresh tensor of the same size, and returns it; on
     * failure {@code out} is released. The argument is not released.
     */
    static DenseTensor copyInto(Tensor t, DenseTensor out) throws IOException {
        try {
            long[] pos = {0};
            MemorySegment dst = out.data();
            t.writeTo(chunk -> {
                MemorySegment.copy(chunk, 0, dst, pos[0], chunk.byteSize());
                pos[0] += chunk.byteSize();
            });
            return out;
        } catch (IOException | RuntimeException e) {
            out.release();
            throw e;
        }
    }

    /**
     * Runs {@code action} on the tensor's bytes as one segment: the tensor's own when it has them so,
     * otherwise a temporary copy that is freed afterwards.
     */
    public static <R> R withContiguous(Tensor t, SegmentFunction<R> action) throws IOException {
        var direct = t.contiguous();
        if (direct.isPresent()) {
            return action.apply(direct.get());
        }
        DenseTensor copy = materialize(t);
        try {
            return action.apply(copy.data());
        } finally {
            copy.release();
        }
    }

    @FunctionalInterface
    public interface SegmentFunction<R> {
        R apply(MemorySegment segment) throws IOException;
    }

    private record Placeholder(DType dtype, long[] shapeArray) implements Tensor {
        @Override
        public long[] shape() {
            return shapeArray.clone();
        }

        @Override
        public void writeTo(ByteSink sink) {
            throw new IllegalStateException("a placeholder tensor has no bytes; it only plans headers");
        }

        @Override
        public void release() {}
    }
}
