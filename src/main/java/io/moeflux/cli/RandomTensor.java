package io.moeflux.cli;

import io.moeflux.tensor.ByteSink;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.Tensor;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A tensor of deterministic pseudo-random values that exist only while they are written.
 *
 * <p>The bytes are a SplitMix64 stream keyed by the seed and the tensor's name. SplitMix64's state after
 * {@code i} steps is {@code key + i * GAMMA}, so any 8-byte word can be computed on its own: byte ranges are
 * written in parallel and every run gives the same bytes, whatever the chunking. Floating-point types
 * get their exponent bits pinned so every value is a finite number of modest size (no NaN, no Inf);
 * that keeps casts and comparisons in downstream tools meaningful.
 */
final class RandomTensor implements Tensor {
    private static final long GAMMA = 0x9E3779B97F4A7C15L;
    /** Scratch per write call and size of a parallel piece; a multiple of 8 so words never straddle chunks. */
    private static final long CHUNK = 1L << 20;
    private static final long PIECE = 16L << 20;
    private static final ValueLayout.OfLong WORD = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final DType dtype;
    private final long[] shape;
    private final long byteSize;
    private final long key;
    private final long keepMask;
    private final long setBits;
    private final AtomicBoolean released = new AtomicBoolean();

    RandomTensor(DType dtype, long[] shape, long seed, String name) {
        this.dtype = dtype;
        this.shape = shape.clone();
        this.byteSize = Shapes.byteSize(dtype, shape);
        this.key = mix(seed ^ fnv1a64(name));
        // Sign, the lowest three exponent bits and the mantissa stay random; the upper exponent bits are
        // fixed at 0b0111_1 (BF16, F32) or 0b01111 (F16), which gives |x| in [2^-7, 2) or [1, 2).
        switch (dtype) {
            case BF16, F16 -> {
                keepMask = 0x83FF_83FF_83FF_83FFL;
                setBits = 0x3C00_3C00_3C00_3C00L;
            }
            case F32 -> {
                keepMask = 0x83FF_FFFF_83FF_FFFFL;
                setBits = 0x3C00_0000_3C00_0000L;
            }
            default -> {
                keepMask = -1L;
                setBits = 0L;
            }
        }
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
        return byteSize;
    }

    @Override
    public void writeTo(ByteSink sink) throws IOException {
        writeRange(0, byteSize, sink);
    }

    @Override
    public List<ByteRange> byteRanges() {
        if (byteSize <= PIECE) {
            return Tensor.super.byteRanges();
        }
        List<ByteRange> ranges = new ArrayList<>();
        for (long off = 0; off < byteSize; off += PIECE) {
            long start = off;
            long len = Math.min(PIECE, byteSize - off);
            ranges.add(new ByteRange(start, len, sink -> writeRange(start, len, sink)));
        }
        return ranges;
    }

    @Override
    public void release() {
        released.set(true);
    }

    /** Bytes {@code [start, start + length)}; {@code start} is a multiple of 8. */
    private void writeRange(long start, long length, ByteSink sink) throws IOException {
        if (released.get()) {
            throw new IllegalStateException("random tensor " + dtype + Shapes.format(shape) + " was already released");
        }
        long scratchSize = Math.min(CHUNK, (length + 7) & ~7L);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment scratch = arena.allocate(Math.max(8, scratchSize), 8);
            for (long done = 0; done < length; done += scratchSize) {
                long len = Math.min(scratchSize, length - done);
                long firstWord = (start + done) >>> 3;
                long words = (len + 7) >>> 3;
                for (long w = 0; w < words; w++) {
                    scratch.setAtIndex(WORD, w, (mix(key + (firstWord + w + 1) * GAMMA) & keepMask) | setBits);
                }
                sink.write(scratch.asSlice(0, len));
            }
        }
    }

    /** SplitMix64's output function. */
    private static long mix(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    private static long fnv1a64(String s) {
        long h = 0xCBF29CE484222325L;
        for (byte b : s.getBytes(StandardCharsets.UTF_8)) {
            h = (h ^ (b & 0xFF)) * 0x100000001B3L;
        }
        return h;
    }

    @Override
    public String toString() {
        return "RandomTensor" + dtype + Shapes.format(shape);
    }
}
