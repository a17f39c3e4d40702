package io.moeflux.connect.kafka;

import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.apache.kafka.common.TopicPartition;
import reactor.core.publisher.Mono;
import reactor.core.publisher.Sinks;
import reactor.kafka.receiver.KafkaReceiver;
import reactor.kafka.receiver.ReceiverOptions;
import reactor.kafka.receiver.ReceiverPartition;

/**
 * Follows partition 0 of a scaled-out conversion's output topic, where every member's segment
 * records and the final commit records land: tells the committer when all source partitions are
 * converted, and every member when the converted checkpoint is committed.
 */
final class OutputWatch {
    private final KafkaSinkOptions sink;
    private final int sourcePartitions;
    private final Map<String, Object> consumerOverrides;
    private final Map<Integer, WireFormat.Segment> segments = new TreeMap<>();
    private final Sinks.One<List<WireFormat.Segment>> allSegments = Sinks.one();
    private final Sinks.One<WireFormat.Commit> committed = Sinks.one();

    OutputWatch(KafkaSinkOptions sink, int sourcePartitions, Map<String, Object> consumerOverrides) {
        this.sink = sink;
        this.sourcePartitions = sourcePartitions;
        this.consumerOverrides = consumerOverrides;
    }

    /** Follows the topic until the commit record appears. */
    Mono<Void> run() {
        ReceiverOptions<byte[], byte[]> options = ReceiverOptions.<byte[], byte[]>create(
                        TopicScanner.consumerProperties(sink.bootstrapServers(), consumerOverrides))
                .assignment(List.of(new TopicPartition(sink.topic(), 0)))
                .addAssignListener(assigned -> assigned.forEach(ReceiverPartition::seekToBeginning));
        return KafkaReceiver.create(options).receive(ReactorKafkaSource.RECEIVE_PREFETCH)
                .filter(r -> WireFormat.text(r.headers(), WireFormat.CHECKPOINT).map(sink.checkpointId()::equals).orElse(false))
                .<Boolean>handle((r, out) -> {
                    String where = "checkpoint " + sink.checkpointId() + " on topic " + sink.topic() + " (offset "
                            + r.offset() + ")";
                    switch (WireFormat.typeOf(r.headers())) {
                        case WireFormat.SEGMENT -> onSegment(WireFormat.parseSegment(r.value(), where));
                        case WireFormat.COMMIT -> {
                            committed.tryEmitValue(WireFormat.parseCommit(r.value(), where));
                            out.complete();
                        }
                        default -> { }
                    }
                })
                .then();
    }

    private synchronized void onSegment(WireFormat.Segment segment) {
        // A segment converted again after a rebalance repeats the first; the first one counts.
        segments.putIfAbsent(segment.sourcePartition(), segment);
        if (segments.size() == sourcePartitions) {
            allSegments.tryEmitValue(List.copyOf(segments.values()));
        }
    }

    /** Every source partition's segment, once all are on the topic. */
    Mono<List<WireFormat.Segment>> allSegments() {
        return allSegments.asMono();
    }

    /** The converted checkpoint's commit record, once it is on the topic. */
    Mono<WireFormat.Commit> committed() {
        return committed.asMono();
    }
}
