package io.moeflux.connect.http;

import io.moeflux.tensor.ByteSink;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.Tensor;
import io.netty.buffer.ByteBuf;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.CancellationException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * A tensor whose bytes are still arriving: the upload hands over each part of the body that belongs to it,
 * and {@link #writeTo} drains them, in order, as they come, so its bytes go from the socket into their
 * place without a copy on the way. Each part's {@code drained} callback runs once the part is written;
 * the upload reads no further until it has, which is how a slow sink stops the socket.
 *
 * <p>Its bytes can be written once: there is nothing to replay them from.
 */
final class StreamingTensor implements Tensor {
    private record Part(ByteBuf bytes, Runnable drained) {}

    /** Wakes a waiting writer when the upload fails or the tensor is released. */
    private static final Part ENDED = new Part(null, () -> {});

    private final DType dtype;
    private final long[] shape;
    private final String name;
    private final LinkedBlockingQueue<Part> parts = new LinkedBlockingQueue<>();
    private final AtomicBoolean released = new AtomicBoolean();
    private final AtomicBoolean writing = new AtomicBoolean();
    private volatile Throwable failure;

    StreamingTensor(String name, DType dtype, long[] shape) {
        this.name = name;
        this.dtype = dtype;
        this.shape = shape.clone();
    }

    @Override
    public DType dtype() {
        return dtype;
    }

    @Override
    public long[] shape() {
        return shape.clone();
    }

    /** Hands over the next part of the tensor's bytes; takes ownership of {@code bytes}. */
    void offer(ByteBuf bytes, Runnable drained) {
        parts.add(new Part(bytes, drained));
        if (released.get()) {
            discardQueued();
        }
    }

    /** The upload ended before the tensor's last byte: a writer waiting for bytes fails. */
    void fail(Throwable cause) {
        failure = cause;
        parts.add(ENDED);
    }

    @Override
    public void writeTo(ByteSink sink) throws IOException {
        if (!writing.compareAndSet(false, true)) {
            throw new IllegalStateException(name + " streams from an upload: its bytes can be written once");
        }
        long left = Shapes.byteSize(dtype, shape);
        while (left > 0) {
            Part part;
            try {
                part = parts.take();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted while waiting for the bytes of " + name);
            }
            if (part == ENDED) {
                if (failure != null) {
                    throw new IOException("the upload of " + name + " ended: " + failure.getMessage(), failure);
                }
                throw new CancellationException(name + " was released before its bytes were written");
            }
            try {
                left -= part.bytes().readableBytes();
                sink.write(MemorySegment.ofBuffer(part.bytes().nioBuffer()));
            } finally {
                part.bytes().release();
            }
            part.drained().run();
        }
    }

    @Override
    public void release() {
        if (released.compareAndSet(false, true)) {
            discardQueued();
            parts.add(ENDED);
        }
    }

    /** Parts nobody will write: their buffers go back, and the upload is not told to read on. */
    private void discardQueued() {
        for (Part part; (part = parts.poll()) != null; ) {
            if (part != ENDED) {
                part.bytes().release();
            }
        }
    }

    @Override
    public String toString() {
        return "StreamingTensor " + name + " " + dtype + Shapes.format(shape);
    }
}
