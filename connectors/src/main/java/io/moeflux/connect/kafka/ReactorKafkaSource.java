package io.moeflux.connect.kafka;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.TopicPartition;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.kafka.receiver.KafkaReceiver;
import reactor.kafka.receiver.ReceiverOptions;

/** {@link KafkaCheckpointSource} on Reactor Kafka. */
final class ReactorKafkaSource implements KafkaCheckpointSource {
    /** Records Reactor Kafka queues ahead of the reassembly; with 1 MiB chunks a few MiB. */
    static final int RECEIVE_PREFETCH = 4;
    /**
     * How much earlier than its manifest a checkpoint's records may be stamped: publishers on other
     * hosts (scale-out members, a retried publish) have clocks of their own.
     */
    static final Duration CLOCK_SKEW = Duration.ofMinutes(5);

    private final KafkaSourceOptions options;
    private final TopicScanner scanner;
    /** Resolved once, so describe() and tensors() agree on "the newest" checkpoint. */
    private final Mono<String> checkpointId;
    /** Found once: describe() and tensors() both need it, and finding it means scanning partition 0. */
    private final Mono<TopicScanner.Found> manifest;
    /** The most bytes any read held in reassembly buffers and unreleased tensors, for the memory tests. */
    private final AtomicLong peakReassemblyBytes = new AtomicLong();

    ReactorKafkaSource(KafkaSourceOptions options) {
        this.options = options;
        this.scanner = new TopicScanner(options.bootstrapServers(), options.topic(), options.consumerProperties(),
                options.stallTimeout(), options.waiting());
        this.checkpointId = options.checkpointId().map(Mono::just).orElseGet(() -> scanner.newestCommitted().cache());
        this.manifest = checkpointId.flatMap(scanner::manifest).cache();
    }

    @Override
    public Mono<CheckpointDescriptor> describe() {
        return requireTopic().then(manifest)
                .map(found -> new CheckpointDescriptor(found.manifest().tensors(), found.manifest().configJson()));
    }

    @Override
    public Flux<TensorEvent> tensors() {
        return requireTopic().zipWith(checkpointId).flatMapMany(t -> {
            int partitions = t.getT1();
            String checkpoint = t.getT2();
            // Start where the checkpoint starts rather than at the beginning of a topic that may hold
            // many older checkpoints: the manifest goes out before any of its data on every partition.
            return manifest.flatMapMany(found -> scanner.offsetsAt(partitions, found.timestamp() - CLOCK_SKEW.toMillis())
                    .flatMapMany(start -> read(checkpoint, partitions, start, Reassembler.Parts.of(found))));
        });
    }

    long peakReassemblyBytes() {
        return peakReassemblyBytes.get();
    }

    private Mono<Integer> requireTopic() {
        return Topics.partitions(options.bootstrapServers(), options.topic())
                .map(p -> p.orElseThrow(() -> new KafkaCheckpointException("topic " + options.topic() + " does not exist on "
                        + options.bootstrapServers())));
    }

    private Flux<TensorEvent> read(String checkpoint, int partitionCount, Map<Integer, Long> start,
            Optional<Reassembler.Parts> parts) {
        return Stages.releaseOnDiscard(Flux.defer(() -> {
            Set<Integer> partitions = IntStream.range(0, partitionCount).boxed().collect(Collectors.toSet());
            ReassemblyBudget budget = new ReassemblyBudget(options.maxReassemblyBytes());
            Reassembler reassembler = new Reassembler(options.topic(), checkpoint, partitions, budget, options.spill(), parts);
            StallWatchdog watchdog = new StallWatchdog(options.stallTimeout(), budget::hasWaiters,
                    () -> "checkpoint " + checkpoint + " on topic " + options.topic() + " (" + reassembler.state() + ")");
            List<TopicPartition> assignment = partitions.stream().map(p -> new TopicPartition(options.topic(), p)).toList();
            ReceiverOptions<byte[], byte[]> receiverOptions = ReceiverOptions.<byte[], byte[]>create(
                            TopicScanner.consumerProperties(options.bootstrapServers(), options.consumerProperties()))
                    .assignment(assignment)
                    .addAssignListener(assigned -> assigned.forEach(p -> p.seek(start.get(p.topicPartition().partition()))));
            return reassembled(KafkaReceiver.create(receiverOptions).receive(RECEIVE_PREFETCH).transform(watchdog::guard),
                    reassembler)
                    .doFinally(signal -> peakReassemblyBytes.accumulateAndGet(budget.peakBytes(), Math::max));
        }));
    }

    /**
     * The checkpoint's tensors out of its records: each record goes through the reassembler, one at a
     * time, until the commit record ends the checkpoint; whatever is half reassembled when the stream
     * ends, fails or is cancelled is released.
     */
    static Flux<TensorEvent> reassembled(Flux<? extends ConsumerRecord<byte[], byte[]>> records, Reassembler reassembler) {
        return records
                .concatMap(reassembler::onRecord, 1)
                .takeWhile(step -> step instanceof Reassembler.Emit)
                .map(step -> ((Reassembler.Emit) step).event())
                .doFinally(signal -> reassembler.releaseAll());
    }
}
