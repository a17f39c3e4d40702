package io.moeflux.connect.kafka;

import io.moeflux.connect.kafka.Chunker.Sent;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import reactor.core.publisher.Flux;
import reactor.core.publisher.GroupedFlux;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Schedulers;
import reactor.kafka.receiver.KafkaReceiver;
import reactor.kafka.receiver.ReceiverOffset;
import reactor.kafka.receiver.ReceiverOptions;
import reactor.kafka.receiver.ReceiverRecord;
import reactor.kafka.sender.KafkaSender;
import reactor.kafka.sender.SenderOptions;
import reactor.kafka.sender.SenderRecord;
import reactor.kafka.sender.SenderResult;

/** One member of a {@link KafkaGroupConversion}. */
final class GroupMember {
    private static final int SEND_PREFETCH = 8;

    private final KafkaGroupConversion conversion;
    private final KafkaGroupConversion.Planner planner;
    private final KafkaSourceOptions source;
    private final KafkaSinkOptions sink;
    private final String sourceId;

    GroupMember(KafkaGroupConversion conversion, KafkaGroupConversion.Planner planner) {
        this.conversion = conversion;
        this.planner = planner;
        this.source = conversion.source();
        this.sink = conversion.sink();
        this.sourceId = source.checkpointId().orElseThrow();
    }

    Mono<CommitSummary> run() {
        TopicScanner scanner = new TopicScanner(source.bootstrapServers(), source.topic(), source.consumerProperties(),
                source.stallTimeout(), source.waiting());
        Mono<Integer> sourcePartitions = Topics.partitions(source.bootstrapServers(), source.topic())
                .map(p -> p.orElseThrow(() -> new KafkaCheckpointException("topic " + source.topic() + " does not exist")));
        Mono<TopicScanner.Found> found = scanner.manifest(sourceId).cache();
        Mono<KafkaGroupConversion.Plan> plan = found
                .map(f -> planner.plan(new CheckpointDescriptor(f.manifest().tensors(), f.manifest().configJson())));
        Mono<Integer> outputPartitions = Topics.ensure(sink.bootstrapServers(), sink.topic(), sink.partitionsIfCreated());
        return Mono.zip(sourcePartitions, plan, outputPartitions, found).flatMap(t -> Mono.usingWhen(
                Mono.fromCallable(() -> KafkaSender.create(senderOptions())),
                sender -> new Run(sender, t.getT1(), t.getT2(), t.getT3(), Reassembler.Parts.of(t.getT4())).run(),
                GroupMember::close,
                (sender, error) -> close(sender),
                GroupMember::close));
    }

    private static Mono<Void> close(KafkaSender<byte[], byte[]> sender) {
        return Mono.<Void>fromRunnable(sender::close).subscribeOn(Schedulers.boundedElastic());
    }

    private SenderOptions<byte[], byte[]> senderOptions() {
        return SenderOptions.<byte[], byte[]>create(ReactorKafkaSink.producerProperties(sink.bootstrapServers(),
                sink.chunkBytes(), sink.bufferMemory(), sink.producerProperties())).maxInFlight(sink.maxInFlight());
    }

    private ReceiverOptions<byte[], byte[]> receiverOptions() {
        Map<String, Object> p = new HashMap<>(TopicScanner.consumerProperties(source.bootstrapServers(),
                source.consumerProperties()));
        p.put(ConsumerConfig.GROUP_ID_CONFIG, conversion.groupId());
        // A member that dies without leaving the group (killed, not stopped) holds its partitions until
        // its session expires; the broker's minimum, 6 s, hands them on quickly.
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 6000);
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 1000);
        p.putAll(source.consumerProperties());
        // Reactor Kafka holds a rebalance (up to a minute) until every record handed out is
        // acknowledged; here only a partition's commit record ever is, and a partition given away
        // mid-segment is converted again by its new owner anyway, so rebalances go ahead at once.
        return ReceiverOptions.<byte[], byte[]>create(p)
                .subscription(List.of(source.topic()))
                .maxDelayRebalance(Duration.ZERO);
    }

    /** A member's state for one run. */
    private final class Run {
        private final KafkaSender<byte[], byte[]> sender;
        private final int sourcePartitions;
        private final KafkaGroupConversion.Plan plan;
        private final int outputPartitions;
        private final Chunker chunker;
        private final ReassemblyBudget budget;
        private final OutputWatch watch;
        /** When the source checkpoint was published in parts. */
        private final Optional<Reassembler.Parts> parts;

        Run(KafkaSender<byte[], byte[]> sender, int sourcePartitions, KafkaGroupConversion.Plan plan, int outputPartitions,
                Optional<Reassembler.Parts> parts) {
            this.sender = sender;
            this.sourcePartitions = sourcePartitions;
            this.plan = plan;
            this.outputPartitions = outputPartitions;
            this.chunker = new Chunker(sink.topic(), sink.checkpointId(), sink.chunkBytes());
            this.budget = new ReassemblyBudget(source.maxReassemblyBytes());
            this.watch = new OutputWatch(sink, sourcePartitions, source.consumerProperties());
            this.parts = parts;
        }

        Mono<CommitSummary> run() {
            // Groups: one per assigned partition, plus one per partition whose records come again after
            // its segment is done (a rebalance); a few times the partition count bounds them.
            int groups = Math.max(16, 4 * sourcePartitions);
            // The manifest opens the converted checkpoint on every output partition; each member sends it
            // (readers take the first copy), part 0 alone first, as the sink explains.
            Chunker.Manifest manifest = chunker.manifest(WireFormat.manifestJson(sink.checkpointId(),
                    plan.output().tensors(), plan.output().configJson(), Optional.empty()), outputPartitions);
            Mono<Void> open = sender.send(Flux.fromIterable(manifest.first()))
                    .then(sender.send(Flux.fromIterable(manifest.rest())).then());
            Flux<Void> segments = KafkaReceiver.create(receiverOptions())
                    .receive(ReactorKafkaSource.RECEIVE_PREFETCH)
                    .groupBy(ConsumerRecord::partition)
                    .flatMap(this::segment, groups);
            return open.thenMany(Flux.merge(segments.takeUntilOther(watch.committed()), watch.run()))
                    .then(watch.committed())
                    .map(c -> new CommitSummary(sink.endpoint().toString(), c.tensors(), c.bytes(), c.partitions()));
        }

        /**
         * Converts what one source partition holds of the checkpoint and publishes it, then a segment
         * record; the source offset is committed only after that, so a member that dies before leaves
         * the partition to be converted again by whoever gets it next.
         */
        private Flux<Void> segment(GroupedFlux<Integer, ReceiverRecord<byte[], byte[]>> records) {
            int partition = records.key();
            return Flux.defer(() -> {
                Reassembler reassembler = new Reassembler(source.topic(), sourceId, Set.of(partition), budget, source.spill(), parts);
                AtomicReference<ReceiverOffset> commitRecord = new AtomicReference<>();
                long[] perPartition = new long[outputPartitions];
                long[] totals = new long[2];
                Flux<TensorEvent> events = Stages.releaseOnDiscard(records
                        .concatMap(r -> reassembler.onRecord(r).doOnNext(step -> {
                            if (step instanceof Reassembler.Done) {
                                commitRecord.set(r.receiverOffset());
                            }
                        }), 1)
                        .takeWhile(step -> step instanceof Reassembler.Emit)
                        .map(step -> ((Reassembler.Emit) step).event())
                        .doFinally(signal -> reassembler.releaseAll()));
                // A layer's tensors are in this partition whole or in the pieces of every part; the conversion and the
                // converted checkpoint take them whole.
                Flux<SenderRecord<byte[], byte[], Sent>> out = events.transform(Stages.gatherPieces(source.spill()))
                        .transform(plan.stage()).concatMap(chunker::chunks, 1);
                return sender.send(out.doOnDiscard(TensorEvent.class, TensorEvent::release)
                                .publishOn(Schedulers.boundedElastic(), SEND_PREFETCH))
                        .doOnNext(result -> count(result, perPartition, totals))
                        .then(Mono.defer(() -> commitRecord.get() == null
                                ? Mono.<Void>empty()
                                : finish(partition, totals, perPartition, commitRecord.get())))
                        .flux();
            });
        }

        private void count(SenderResult<Sent> result, long[] perPartition, long[] totals) {
            if (result.exception() != null) {
                throw new KafkaCheckpointException("the broker rejected a record of tensor "
                        + result.correlationMetadata().tensor() + ": " + result.exception());
            }
            Sent sent = result.correlationMetadata();
            totals[1] += sent.payloadBytes();
            if (sent.lastOfTensor()) {
                totals[0]++;
                perPartition[result.recordMetadata().partition()]++;
                sink.progress().tensorWritten(sent.tensor());
            }
            if (sent.payloadBytes() > 0) {
                sink.progress().bytesWritten(sent.payloadBytes());
            }
        }

        private Mono<Void> finish(int partition, long[] totals, long[] perPartition, ReceiverOffset commitRecord) {
            WireFormat.Segment segment = new WireFormat.Segment(sink.checkpointId(), partition, sourcePartitions, totals[0],
                    totals[1], perPartition);
            Mono<Void> publishSegment = sender.send(Mono.just(chunker.segment(segment))).then();
            // The owner of source partition 0 writes the commit records, and commits its own offset only
            // afterwards: if it dies in between, the next owner of partition 0 writes them.
            Mono<Void> commitCheckpoint = partition != 0 ? Mono.empty() : watch.allSegments().flatMap(all -> {
                long tensors = all.stream().mapToLong(WireFormat.Segment::tensors).sum();
                long bytes = all.stream().mapToLong(WireFormat.Segment::bytes).sum();
                long[] counts = new long[outputPartitions];
                all.forEach(s -> {
                    for (int i = 0; i < Math.min(counts.length, s.partitionTensors().length); i++) {
                        counts[i] += s.partitionTensors()[i];
                    }
                });
                return sender.send(Flux.fromIterable(chunker.commits(tensors, bytes, counts))).then();
            });
            return publishSegment.then(commitCheckpoint).then(Mono.defer(() -> {
                commitRecord.acknowledge();
                // Losing the partition in a rebalance makes the commit fail; its next owner redoes it.
                return commitRecord.commit().onErrorResume(e -> Mono.empty());
            }));
        }
    }
}
