package io.moeflux.connect.kafka;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import java.util.List;
import java.util.Set;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Collectors;
import java.util.stream.IntStream;
import org.apache.kafka.common.TopicPartition;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.kafka.receiver.KafkaReceiver;
import reactor.kafka.receiver.ReceiverOptions;
import reactor.kafka.receiver.ReceiverPartition;

/** {@link KafkaCheckpointSource} on Reactor Kafka. */
final class ReactorKafkaSource implements KafkaCheckpointSource {
    /** Records Reactor Kafka queues ahead of the reassembly; with 1 MiB chunks a few MiB. */
    static final int RECEIVE_PREFETCH = 4;

    private final KafkaSourceOptions options;
    private final TopicScanner scanner;
    /** Resolved once, so describe() and tensors() agree on "the newest" checkpoint. */
    private final Mono<String> checkpointId;
    /** The most bytes any read held in reassembly buffers and unreleased tensors, for the memory tests. */
    private final AtomicLong peakReassemblyBytes = new AtomicLong();

    ReactorKafkaSource(KafkaSourceOptions options) {
        this.options = options;
        this.scanner = new TopicScanner(options.bootstrapServers(), options.topic(), options.consumerProperties());
        this.checkpointId = options.checkpointId().map(Mono::just).orElseGet(() -> scanner.newestCommitted().cache());
    }

    @Override
    public Mono<CheckpointDescriptor> describe() {
        return requireTopic().then(checkpointId).flatMap(scanner::manifest)
                .map(m -> new CheckpointDescriptor(m.tensors(), m.configJson()));
    }

    @Override
    public Flux<TensorEvent> tensors() {
        return requireTopic().zipWith(checkpointId)
                .flatMapMany(t -> read(t.getT2(), t.getT1()));
    }

    long peakReassemblyBytes() {
        return peakReassemblyBytes.get();
    }

    private Mono<Integer> requireTopic() {
        return Topics.partitions(options.bootstrapServers(), options.topic())
                .map(p -> p.orElseThrow(() -> new KafkaCheckpointException("topic " + options.topic() + " does not exist on "
                        + options.bootstrapServers())));
    }

    private Flux<TensorEvent> read(String checkpoint, int partitionCount) {
        return Stages.releaseOnDiscard(Flux.defer(() -> {
            Set<Integer> partitions = IntStream.range(0, partitionCount).boxed().collect(Collectors.toSet());
            ReassemblyBudget budget = new ReassemblyBudget(options.maxReassemblyBytes());
            Reassembler reassembler = new Reassembler(options.topic(), checkpoint, partitions, budget, options.spill());
            StallWatchdog watchdog = new StallWatchdog(options.stallTimeout(), budget::hasWaiters,
                    () -> "checkpoint " + checkpoint + " on topic " + options.topic() + " (" + reassembler.state() + ")");
            List<TopicPartition> assignment = partitions.stream().map(p -> new TopicPartition(options.topic(), p)).toList();
            ReceiverOptions<byte[], byte[]> receiverOptions = ReceiverOptions.<byte[], byte[]>create(
                            TopicScanner.consumerProperties(options.bootstrapServers(), options.consumerProperties()))
                    .assignment(assignment)
                    .addAssignListener(assigned -> assigned.forEach(ReceiverPartition::seekToBeginning));
            return KafkaReceiver.create(receiverOptions)
                    .receive(RECEIVE_PREFETCH)
                    .transform(watchdog::guard)
                    .concatMap(reassembler::onRecord, 1)
                    .takeWhile(step -> step instanceof Reassembler.Emit)
                    .map(step -> ((Reassembler.Emit) step).event())
                    .doFinally(signal -> {
                        reassembler.releaseAll();
                        peakReassemblyBytes.accumulateAndGet(budget.peakBytes(), Math::max);
                    });
        }));
    }
}
