package io.moeflux.connect.http;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.TensorInfo;
import io.moeflux.tensor.TransposedRead;
import io.netty.buffer.ByteBuf;
import io.netty.util.ReferenceCountUtil;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.function.Predicate;
import org.reactivestreams.Subscription;
import reactor.core.publisher.BaseSubscriber;
import reactor.core.publisher.Flux;
import reactor.core.publisher.FluxSink;
import reactor.core.publisher.Mono;
import reactor.core.publisher.Sinks;
import reactor.core.scheduler.Schedulers;

/**
 * An HTTP upload as a checkpoint source: the request body, safetensors blobs back to back, read as it
 * arrives (see {@link BlobDecoder} for where the bytes go). One body, read once: {@link #describe()}
 * reads a single-blob upload up to the end of its header (the checkpoint's tensors), and
 * {@link #tensors} goes on from there.
 *
 * <p>Backpressure reaches the socket: the next body chunk is asked for only once the previous one is on
 * file or written by the sink (a streaming tensor's part), and only while the consumer wants tensors.
 * Chunks are decoded on the thread that delivers them (the caller's body scheduler).
 */
public final class UploadSource implements CheckpointSource, AutoCloseable {
    private final Flux<ByteBuf> body;
    private final UploadSourceOptions options;
    private final BlobDecoder decoder;
    private final Reader reader = new Reader();
    private final Sinks.One<CheckpointDescriptor> described = Sinks.one();

    private UploadSource(Flux<ByteBuf> body, UploadSourceOptions options) {
        this.body = body;
        this.options = options;
        this.decoder = new BlobDecoder(options);
    }

    /** {@code body} hands over its buffers (retained ones); each is released once on file, or when discarded. */
    public static UploadSource create(Flux<ByteBuf> body, UploadSourceOptions options) {
        return new UploadSource(body, options);
    }

    /**
     * A single-blob upload's tensors, from its header (reading the body that far); nothing for other
     * uploads, whose tensors are known only as their blobs arrive.
     */
    @Override
    public Mono<CheckpointDescriptor> describe() {
        if (!options.singleBlob()) {
            return Mono.just(CheckpointDescriptor.UNKNOWN);
        }
        return Mono.defer(() -> {
            reader.start();
            return described.asMono();
        });
    }

    /**
     * How a consumer takes the tensors.
     *
     * @param streamed   tensors that go out as their first byte arrives, the bytes following as they come, for a
     *                   consumer that writes them into place as they do: it must never hold them back
     * @param rowPieces  whether large tensors go out in pieces of whole rows as they land (for a consumer of pieces)
     * @param transposed tensors the consumer reads transposed, by name: held in column blocks as wide as its
     *                   tiles, in staging memory, instead of spooled (whole tensors only: staging memory counts
     *                   a slab's weights, not pieces of them, so not with {@code declared})
     * @param declared   the checkpoint's tensors, when declared up front: the body is then one part of it, each
     *                   blob's tensors pieces of them (placed by the blob's {@code DCP_SHARDING_INFO}, or whole),
     *                   each checked to be one of them, of its type and inside its shape. Without it a blob of
     *                   pieces is refused
     */
    public record Delivery(Predicate<String> streamed, boolean rowPieces, Map<String, TransposedRead> transposed,
            Optional<List<TensorInfo>> declared) {
        public static final Delivery WHOLE = new Delivery(name -> false, false, Map.of());

        public Delivery {
            transposed = Map.copyOf(transposed);
            if (declared.isPresent() && !transposed.isEmpty()) {
                throw new IllegalArgumentException("tensors read transposed are held whole, and a part's tensors are pieces");
            }
        }

        /** A checkpoint of its own, its blobs' tensors whole. */
        public Delivery(Predicate<String> streamed, boolean rowPieces, Map<String, TransposedRead> transposed) {
            this(streamed, rowPieces, transposed, Optional.empty());
        }
    }

    /** The tensors, whole, each once its last byte is on file. */
    @Override
    public Flux<TensorEvent> tensors() {
        return tensors(Delivery.WHOLE);
    }

    /** The tensors, delivered as {@code delivery} says. */
    public Flux<TensorEvent> tensors(Delivery delivery) {
        return Stages.releaseOnDiscard(Flux.<TensorEvent>create(out -> {
            decoder.deliver(delivery);
            out.onRequest(n -> reader.demand());
            out.onDispose(reader::end);
            reader.attach(out);
        }, FluxSink.OverflowStrategy.BUFFER));
    }

    /**
     * Reads the body one chunk at a time. A chunk is asked for when the previous one is done with (its
     * streamed parts written) and the consumer has demand; a single-blob upload's reading stops after the
     * header until a consumer attaches.
     */
    private final class Reader extends BaseSubscriber<ByteBuf> {
        private FluxSink<TensorEvent> out;
        /** A chunk read during {@link #describe()}, waiting for a consumer. */
        private ByteBuf held;
        private boolean started;
        /** A chunk has been asked for and not yet delivered. */
        private boolean requested;
        /** A chunk is being decoded, or its streamed parts written. */
        private boolean decoding;
        private boolean bodyComplete;
        private boolean ended;

        synchronized void start() {
            if (!started) {
                started = true;
                requested = true;
                // Buffers the body still queues when reading ends early go back through the discard hook.
                body.doOnDiscard(ByteBuf.class, ReferenceCountUtil::safeRelease).subscribe(this);
            }
        }

        void attach(FluxSink<TensorEvent> sink) {
            ByteBuf resume;
            synchronized (this) {
                out = sink;
                resume = held;
                held = null;
            }
            if (resume != null) {
                decode(resume);
            } else if (!started) {
                start();
            } else {
                synchronized (this) {
                    if (bodyComplete) {
                        complete();
                    }
                }
            }
        }

        @Override
        protected void hookOnSubscribe(Subscription subscription) {
            subscription.request(1);
        }

        @Override
        protected void hookOnNext(ByteBuf chunk) {
            synchronized (this) {
                requested = false;
            }
            options.listener().bytesReceived(chunk.readableBytes());
            decode(chunk);
        }

        private void decode(ByteBuf chunk) {
            FluxSink<TensorEvent> sink;
            synchronized (this) {
                sink = out;
                if (ended) {
                    ReferenceCountUtil.safeRelease(chunk);
                    return;
                }
                decoding = true;
            }
            BlobDecoder.Taken taken;
            try {
                taken = decoder.accept(chunk, sink == null ? null : sink::next);
            } catch (RuntimeException e) {
                fail(e);
                return;
            }
            if (taken == null) {
                synchronized (this) {
                    held = chunk;
                    decoding = false;
                }
                described.tryEmitValue(CheckpointDescriptor.UNKNOWN.withTensors(decoder.firstHeader().orElseThrow()));
                return;
            }
            CompletableFuture<Void> ready = taken.resume() == null ? taken.drained()
                    : CompletableFuture.allOf(taken.drained(), taken.resume());
            ready.whenComplete((ignored, error) -> {
                if (error != null) {
                    ReferenceCountUtil.safeRelease(taken.resume() != null ? chunk : null);
                    fail(error);
                } else if (taken.resume() != null) {
                    // Staging memory was freed by a writer thread: decode on, off that thread.
                    Schedulers.boundedElastic().schedule(() -> decode(chunk));
                } else {
                    chunkDone();
                }
            });
        }

        private void chunkDone() {
            boolean finished;
            synchronized (this) {
                decoding = false;
                finished = bodyComplete;
            }
            if (finished) {
                complete();
            } else {
                demand();
            }
        }

        /**
         * Asks for the next chunk when none is being decoded and the body goes on: while describing (the
         * header is not all in yet), or when a consumer wants tensors.
         */
        void demand() {
            synchronized (this) {
                if (requested || decoding || ended || bodyComplete || held != null
                        || (out != null && out.requestedFromDownstream() == 0)) {
                    return;
                }
                requested = true;
            }
            request(1);
        }

        @Override
        protected void hookOnComplete() {
            boolean now;
            synchronized (this) {
                bodyComplete = true;
                now = !decoding && held == null && out != null;
            }
            if (now) {
                complete();
            } else if (out == null && held == null) {
                // The body ended before its header did.
                try {
                    decoder.finish();
                } catch (RuntimeException e) {
                    fail(e);
                }
            }
        }

        private void complete() {
            try {
                decoder.finish();
            } catch (RuntimeException e) {
                fail(e);
                return;
            }
            FluxSink<TensorEvent> sink;
            synchronized (this) {
                sink = out;
            }
            sink.complete();
        }

        @Override
        protected void hookOnError(Throwable error) {
            fail(error);
        }

        /**
         * Fails the consumer first, then stops reading: a tensor still streaming then fails its writer too,
         * and that failure, which only follows from this one, must not be the one reported.
         */
        private void fail(Throwable error) {
            FluxSink<TensorEvent> sink;
            synchronized (this) {
                sink = out;
            }
            described.tryEmitError(error);
            if (sink != null) {
                sink.error(error);
            }
            end();
        }

        /** Stops reading: the body is cancelled, a tensor still streaming fails its writer, held bytes go back. */
        void end() {
            ByteBuf drop;
            synchronized (this) {
                if (ended) {
                    return;
                }
                ended = true;
                drop = held;
                held = null;
            }
            ReferenceCountUtil.safeRelease(drop);
            cancel();
            decoder.close();
        }
    }

    /**
     * Ends the body as if it had failed with {@code why}: the tensors fail with it (a tensor still streaming
     * fails its writer), and reading stops. For an upload whose client or checkpoint has gone.
     */
    public void cut(Throwable why) {
        reader.fail(why);
    }

    /** Stops reading the body and releases what the source holds; for an upload that ends without its tensors being read. */
    @Override
    public void close() {
        reader.end();
    }

    @Override
    public String toString() {
        return "UploadSource" + (options.singleBlob() ? " (single blob)" : "");
    }
}
