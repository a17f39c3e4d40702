package io.moeflux.tensor;

import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.Optional;
import java.util.function.IntToLongFunction;

/**
 * A tensor: type, shape and a way to produce its bytes (row-major, little-endian, as safetensors stores them).
 *
 * <p>The bytes may already sit in memory ({@link DenseTensor}: a slice of a mapped file or an allocated
 * buffer) or be computed while they are written (merged or split experts transpose their parts chunk by
 * chunk straight into the sink). Either way a tensor has exactly one owner at a time: whoever receives
 * it in a {@code TensorEvent} must either pass it on or {@link #release()} it.
 */
public interface Tensor {
    DType dtype();

    /** The shape; a fresh copy. */
    long[] shape();

    default long byteSize() {
        return Shapes.byteSize(dtype(), shape());
    }

    default TensorInfo info(String name) {
        return new TensorInfo(name, dtype(), shape());
    }

    /** Streams all bytes, in order, into {@code sink}. May be called again until the tensor is released. */
    void writeTo(ByteSink sink) throws IOException;

    /**
     * Consecutive byte ranges that together make the tensor and can be written concurrently, for
     * example one expert's slab of a merged tensor each. The default is the whole tensor as one range.
     * (Not to be confused with pieces of a tensor, {@link io.moeflux.pipeline.TensorEvent}'s boxes: these
     * are how one tensor's bytes may be produced in parallel.)
     */
    default List<ByteRange> byteRanges() {
        return List.of(new ByteRange(0, byteSize(), this::writeTo));
    }

    /** The bytes as one segment, when the tensor already holds them that way (no copy). */
    default Optional<MemorySegment> contiguous() {
        return Optional.empty();
    }

    /**
     * The bytes held column block by column block, when they are (see {@link ColumnBlockedTensor}): what a
     * transposition reads best, one block per tile.
     */
    default Optional<ColumnBlocks> columnBlocks() {
        return Optional.empty();
    }

    /**
     * A 2-D tensor's bytes in blocks of {@code blockCols} columns: block {@code b} is a row-major
     * {@code [rows, width]} matrix at {@code blockOffset.applyAsLong(b)} bytes into {@code data}.
     */
    record ColumnBlocks(MemorySegment data, int blockCols, IntToLongFunction blockOffset) {}

    /** Where the bytes lie unmodified in a file, when they do (a slice of a mapped shard). */
    default Optional<FileRegion> fileRegion() {
        return Optional.empty();
    }

    /** Lets go of the memory or mapping behind this tensor. Idempotent; writing afterwards fails. */
    void release();

    /** Bytes {@code [offset, offset + byteSize)} of a tensor, produced by {@code writer}. */
    record ByteRange(long offset, long byteSize, RangeWriter writer) {}

    @FunctionalInterface
    interface RangeWriter {
        void writeTo(ByteSink sink) throws IOException;
    }
}
