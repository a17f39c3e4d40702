package io.moeflux.connect.kafka;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.TensorEvent;
import java.util.Objects;
import java.util.function.Function;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * A Kafka-to-Kafka conversion scaled out over a consumer group: start it in several processes with the
 * same {@code groupId}, and each converts the layers in the source partitions it is assigned (the
 * wire format keeps a layer in one partition, so the expert merge sees all of a layer's experts).
 * Together they publish one complete converted checkpoint; its commit record is written by the
 * member that owns source partition 0, once every source partition's output is in. A member that
 * dies hands its partitions to the others through a rebalance; what it had half published is
 * published again, and readers drop the agreeing duplicates. Every member completes once the
 * converted checkpoint's commit record is on the output topic.
 *
 * <p>Tune together: the output topic should have at least as many partitions as members, and
 * {@code sink.partitionsIfCreated} sets them when the topic is created.
 *
 * @param source  the checkpoint to convert; its id is required
 * @param sink    where the converted checkpoint goes (topic and id; transactions are not used here)
 * @param groupId the consumer group the members share
 */
public record KafkaGroupConversion(KafkaSourceOptions source, KafkaSinkOptions sink, String groupId) {
    public KafkaGroupConversion {
        Objects.requireNonNull(source, "source");
        Objects.requireNonNull(sink, "sink");
        Objects.requireNonNull(groupId, "groupId");
        if (source.checkpointId().isEmpty()) {
            throw new IllegalArgumentException("a scaled-out conversion needs the source checkpoint id (?checkpoint=ID)");
        }
    }

    /** What to make of a checkpoint: the converted checkpoint's plan and the stage that converts. */
    public record Plan(CheckpointDescriptor output, Function<Flux<TensorEvent>, Flux<TensorEvent>> stage) {}

    /** Plans the conversion from the source checkpoint's manifest (every member plans the same). */
    @FunctionalInterface
    public interface Planner {
        Plan plan(CheckpointDescriptor source);
    }

    /** Runs this member until the converted checkpoint is committed. */
    public Mono<CommitSummary> run(Planner planner) {
        return new GroupMember(this, planner).run();
    }
}
