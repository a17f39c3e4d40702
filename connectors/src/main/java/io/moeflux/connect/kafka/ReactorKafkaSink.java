package io.moeflux.connect.kafka;

import io.moeflux.connect.kafka.Chunker.Sent;
import io.moeflux.connect.kafka.KafkaSinkOptions.Transactions;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.TensorInfo;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.HashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeoutException;
import java.util.HashSet;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.function.Function;
import java.util.stream.Collectors;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Schedulers;
import reactor.kafka.sender.KafkaSender;
import reactor.kafka.sender.SenderOptions;
import reactor.kafka.sender.SenderRecord;
import reactor.kafka.sender.SenderResult;

/** {@link KafkaCheckpointSink} on Reactor Kafka. */
final class ReactorKafkaSink implements KafkaCheckpointSink {
    /** Records cut ahead of the producer: enough to keep it busy, few enough to bound memory. */
    private static final int SEND_PREFETCH = 8;

    private final KafkaSinkOptions options;

    ReactorKafkaSink(KafkaSinkOptions options) {
        this.options = options;
    }

    static Map<String, Object> producerProperties(String bootstrapServers, int chunkBytes, long bufferMemory,
            Map<String, Object> overrides) {
        Map<String, Object> p = new HashMap<>();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrapServers);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        // Idempotence keeps every partition's chunks in order and free of duplicates across retries and
        // broker restarts (it implies acks=all and at most 5 requests in flight per connection).
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, Math.max(chunkBytes, 1 << 20));
        p.put(ProducerConfig.BUFFER_MEMORY_CONFIG, bufferMemory);
        // A chunk fills a batch on its own; a larger batch lets small tensors share a request.
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, Math.min(chunkBytes, 1 << 20));
        p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        p.putAll(overrides);
        return p;
    }

    private SenderOptions<byte[], byte[]> senderOptions() {
        Map<String, Object> p = producerProperties(options.bootstrapServers(), options.chunkBytes(),
                options.bufferMemory(), options.producerProperties());
        if (options.transactions() != Transactions.NONE) {
            p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, options.transactionalId());
        }
        return SenderOptions.<byte[], byte[]>create(p).maxInFlight(options.maxInFlight());
    }

    @Override
    public Mono<CommitSummary> write(CheckpointDescriptor planned, Flux<TensorEvent> events) {
        Flux<TensorEvent> owned = Stages.releaseOnDiscard(events);
        return Mono.usingWhen(
                Mono.fromCallable(() -> KafkaSender.create(senderOptions())),
                sender -> Topics.ensure(options.bootstrapServers(), options.topic(), options.partitionsIfCreated())
                        .flatMap(partitions -> new Publication(sender, planned, partitions).run(owned)),
                ReactorKafkaSink::close,
                (sender, error) -> abortThenClose(sender),
                sender -> abortThenClose(sender))
                // Kafka's own failures become I/O errors naming the destination; the upstream's pass unchanged.
                .onErrorMap(ReactorKafkaSink::isKafkaFailure, e -> new UncheckedIOException(new IOException(
                        "publishing checkpoint " + options.checkpointId() + " to " + options.endpoint() + " failed: "
                                + e.getMessage(), e)));
    }

    /** A part of a checkpoint publishes its pieces as they are; a whole checkpoint's records carry whole tensors. */
    @Override
    public boolean placesPieces() {
        return options.part().isPresent();
    }

    private static boolean isKafkaFailure(Throwable e) {
        return e instanceof KafkaException || e instanceof ExecutionException || e instanceof TimeoutException;
    }

    /**
     * An open transaction must be aborted, not just abandoned: until the broker times it out, it would
     * hold back every {@code read_committed} reader of the topic.
     */
    private Mono<Void> abortThenClose(KafkaSender<byte[], byte[]> sender) {
        Mono<Void> abort = options.transactions() == Transactions.NONE
                ? Mono.empty()
                : sender.transactionManager().<Void>abort().onErrorResume(e -> Mono.empty());
        return abort.then(close(sender));
    }

    /** Closing blocks until the producer is done, which deadlocks on the sender's own thread. */
    private static Mono<Void> close(KafkaSender<byte[], byte[]> sender) {
        return Mono.<Void>fromRunnable(sender::close).subscribeOn(Schedulers.boundedElastic());
    }

    /** One write: its counters live here, per subscription. */
    private final class Publication {
        private final KafkaSender<byte[], byte[]> sender;
        private final CheckpointDescriptor planned;
        private final Optional<Map<String, TensorInfo>> plan;
        private final Set<String> written = new HashSet<>();
        private final long[] partitionTensors;
        private final Chunker chunker;
        private long bytes;

        Publication(KafkaSender<byte[], byte[]> sender, CheckpointDescriptor planned, int partitions) {
            this.sender = sender;
            this.planned = planned;
            this.plan = planned.tensors().map(list -> list.stream()
                    .collect(Collectors.toMap(TensorInfo::name, Function.identity(), (a, b) -> a)));
            this.partitionTensors = new long[partitions];
            this.chunker = new Chunker(options.topic(), options.checkpointId(), options.chunkBytes(), options.part());
        }

        Mono<CommitSummary> run(Flux<TensorEvent> events) {
            byte[] manifest = WireFormat.manifestJson(options.checkpointId(), planned.tensors(), planned.configJson(),
                    options.part());
            Mono<Void> sendManifest = sendOpening(chunker.manifest(manifest, partitionTensors.length));
            Flux<TensorEvent> checked = events.handle((event, sink) -> {
                try {
                    checkPlanned(event);
                    sink.next(event);
                } catch (IllegalArgumentException e) {
                    event.release();
                    sink.error(e);
                }
            });
            Mono<Void> body = switch (options.transactions()) {
                case NONE -> sendManifest.then(send(checked.concatMap(chunker::chunks, 1)))
                        .then(Mono.defer(() -> send(commitRecords())));
                case PER_CHECKPOINT -> inTransaction(sendManifest
                        .then(send(checked.concatMap(chunker::chunks, 1)))
                        .then(Mono.defer(() -> send(commitRecords()))));
                case PER_LAYER -> inTransaction(sendManifest)
                        .then(Stages.releaseOnDiscard(checked)
                                .windowUntilChanged(e -> WireFormat.partitionKey(options.checkpointId(), e.fqn()))
                                .concatMap(layer -> inTransaction(send(layer.concatMap(chunker::chunks, 1))))
                                .then())
                        .then(Mono.defer(() -> inTransaction(send(commitRecords()))));
            };
            return body.then(Mono.fromCallable(() -> new CommitSummary(options.endpoint().toString(), written.size(),
                    bytes, partitionTensors.length)));
        }

        private void checkPlanned(TensorEvent event) {
            if (options.part().isPresent()) {
                checkPiece(event);
                return;
            }
            if (!event.isWhole()) {
                // A whole checkpoint's records carry whole tensors; a converter asks the sink (placesPieces) before it
                // cuts any. A part's carry pieces.
                throw new IllegalArgumentException("tensor " + event.fqn() + " arrived as a piece (" + event.box()
                        + " of " + Shapes.format(event.wholeShape()) + "), but a Kafka destination takes whole tensors"
                        + " unless it is one part of a checkpoint: add &part=R&parts=N to it (&part=0&parts=1 for all"
                        + " of a sharded save)");
            }
            if (!written.add(event.fqn())) {
                throw new IllegalArgumentException("tensor " + event.fqn() + " arrived twice for checkpoint "
                        + options.checkpointId());
            }
            if (plan.isPresent()) {
                TensorInfo expected = plan.get().get(event.fqn());
                TensorInfo actual = event.tensor().info(event.fqn());
                if (expected == null) {
                    throw new IllegalArgumentException("tensor " + event.fqn() + " is not in the planned checkpoint");
                }
                if (!expected.equals(actual)) {
                    throw new IllegalArgumentException("tensor " + actual + " does not match its plan " + expected);
                }
            }
        }

        /** A part's pieces: each once, of a planned tensor, of its type and inside its reach. */
        private void checkPiece(TensorEvent event) {
            if (!written.add(event.fqn() + " " + event.box())) {
                throw new IllegalArgumentException("piece " + event.box() + " of tensor " + event.fqn() + " arrived twice for part "
                        + options.part().get().part() + " of checkpoint " + options.checkpointId());
            }
            if (plan.isPresent()) {
                TensorInfo expected = plan.get().get(event.fqn());
                if (expected == null || expected.dtype() != event.tensor().dtype() || !event.box().fitsIn(expected.shape())) {
                    throw new IllegalArgumentException("piece " + event.box() + " of tensor " + event.wholeInfo()
                            + " is not in the planned part " + (expected == null ? "" : "(" + expected + ")"));
                }
            }
        }

        /**
         * A producer's first batch to a partition must be acknowledged before it sends another there: the
         * broker accepts any sequence number from a producer it has no state for, so if that first batch
         * is refused (a partition whose leader is not ready yet, right after the topic was created) while
         * a later one gets in, the retried first batch is out of order for good.
         */
        private Mono<Void> sendOpening(Chunker.Manifest m) {
            return send(Flux.fromIterable(m.first())).then(send(Flux.fromIterable(m.rest())));
        }

        private Flux<SenderRecord<byte[], byte[], Sent>> commitRecords() {
            if (options.part().isEmpty() && plan.isPresent() && plan.get().size() != written.size()) {
                var missing = plan.get().keySet().stream().filter(n -> !written.contains(n)).sorted().limit(5).toList();
                return Flux.error(new IllegalArgumentException("the planned checkpoint has " + plan.get().size()
                        + " tensors but only " + written.size() + " arrived; missing e.g. " + missing));
            }
            return Flux.fromIterable(chunker.commits(written.size(), bytes, partitionTensors));
        }

        /**
         * Reactor Kafka asks for the next record from the producer's network thread when one is
         * acknowledged; cutting chunks (and computing lazy tensors) there would stall all I/O, and a
         * send waiting for buffer memory there would wait for itself. So records are made on a worker.
         */
        private Mono<Void> send(Flux<SenderRecord<byte[], byte[], Sent>> records) {
            // The discard hook must sit on the records: Reactor Kafka subscribes to them without passing on
            // its subscriber's context, and events queued in the chunking stages are released through it.
            return sender.send(records.doOnDiscard(TensorEvent.class, TensorEvent::release)
                            .publishOn(Schedulers.boundedElastic(), SEND_PREFETCH))
                    .doOnNext(this::acknowledged)
                    .then();
        }

        private void acknowledged(SenderResult<Sent> result) {
            if (result.exception() != null) {
                throw new KafkaCheckpointException("the broker rejected a record of tensor "
                        + result.correlationMetadata().tensor() + ": " + result.exception());
            }
            Sent sent = result.correlationMetadata();
            if (sent.payloadBytes() > 0) {
                bytes += sent.payloadBytes();
                options.progress().bytesWritten(sent.payloadBytes());
            }
            if (sent.lastOfTensor()) {
                partitionTensors[result.recordMetadata().partition()]++;
                options.progress().tensorWritten(sent.tensor());
            }
        }

        private Mono<Void> inTransaction(Mono<Void> work) {
            var tx = sender.transactionManager();
            return tx.begin().then(work).then(tx.commit());
        }
    }
}
