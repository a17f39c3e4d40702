package io.moeflux.testing;

import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.DenseTensor;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.Tensor;
import io.moeflux.tensor.Tensors;
import java.util.SplittableRandom;
import java.util.concurrent.atomic.AtomicInteger;

/** Makes tensors with pseudo-random bytes and counts how many are still unreleased. */
public final class TrackedTensors {
    private final AtomicInteger live = new AtomicInteger();
    private final SplittableRandom random;

    public TrackedTensors(long seed) {
        this.random = new SplittableRandom(seed);
    }

    /** Random bytes; for float types NaN-free values of moderate size, so casts are exercised. */
    public DenseTensor random(DType dtype, long... shape) {
        int n = Math.toIntExact(Shapes.numel(shape));
        byte[] bytes = new byte[Math.toIntExact(Shapes.byteSize(dtype, shape))];
        java.nio.ByteBuffer bb = java.nio.ByteBuffer.wrap(bytes).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < n; i++) {
            float v = (float) (random.nextDouble(-4, 4) * Math.pow(2, random.nextInt(-20, 20)));
            switch (dtype) {
                case BF16 -> bb.putShort((short) (Float.floatToRawIntBits(v) >>> 16));
                case F16 -> bb.putShort(Float.floatToFloat16(v));
                case F32 -> bb.putFloat(v);
                case F64 -> bb.putDouble(random.nextDouble(-1e6, 1e6));
                default -> {
                    byte[] b = new byte[dtype.byteSize()];
                    random.nextBytes(b);
                    bb.put(b);
                }
            }
        }
        return tracked(dtype, shape, bytes);
    }

    /** A tensor of these bytes, counted until released. */
    public DenseTensor tracked(DType dtype, long[] shape, byte[] bytes) {
        DenseTensor plain = Tensors.of(dtype, shape, bytes);
        live.incrementAndGet();
        AtomicInteger counter = live;
        return new DenseTensor(dtype, shape, plain.data(), () -> {
            counter.decrementAndGet();
            plain.release();
        });
    }

    public TensorEvent event(String fqn, DType dtype, long... shape) {
        return new TensorEvent(fqn, random(dtype, shape));
    }

    /** Tensors made here and not yet released. */
    public int live() {
        return live.get();
    }

    public static byte[] bytes(Tensor t) {
        return TensorBytes.of(t);
    }
}
