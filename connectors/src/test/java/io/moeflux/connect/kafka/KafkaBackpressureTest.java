package io.moeflux.connect.kafka;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.tensor.SpillArea;
import io.moeflux.tensor.TensorInfo;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import reactor.core.publisher.Mono;

/** A slow consumer of a Kafka source: reading pauses, and the reassembled bytes in memory stay bounded. */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class KafkaBackpressureTest {
    @RegisterExtension
    static final KafkaBroker KAFKA = new KafkaBroker();

    @TempDir
    Path tmp;

    @Test
    void aSlowSinkKeepsTheSourcesMemoryBounded() {
        List<TensorInfo> infos = TestCheckpoints.syntheticInfos(48, 1 << 20, 12);
        long checkpointBytes = 48L << 20;
        KafkaCheckpointSink.create(KafkaSinkOptions.to(KAFKA.endpoint("slow", "c")).withChunkBytes(256 << 10)
                        .withPartitionsIfCreated(3))
                .write(CheckpointDescriptor.UNKNOWN.withTensors(infos), TestCheckpoints.synthetic(infos, 9))
                .block();

        long budget = 4L << 20;
        ReactorKafkaSource source = (ReactorKafkaSource) KafkaCheckpointSource.create(
                KafkaSourceOptions.from(KAFKA.endpoint("slow", "c")).withMaxReassemblyBytes(budget)
                        .withSpill(SpillArea.in(tmp, Long.MAX_VALUE)));
        // The heap the consumer fetches into is bounded by fetch.max.bytes; what grows with a slow sink
        // are reassembled tensors nobody takes, which the source counts as it allocates and frees them.
        long received = source.tensors()
                .concatMap(e -> Mono.delay(Duration.ofMillis(25)).then(Mono.fromRunnable(e::release))
                        .thenReturn(e.tensor().byteSize()), 1)
                .reduce(0L, Long::sum)
                .block();

        assertThat(received).isEqualTo(checkpointBytes);
        System.out.printf("backpressure: %d MiB read by a slow sink, peak reassembly memory %.1f MiB (budget %d MiB)%n",
                checkpointBytes >> 20, source.peakReassemblyBytes() / 1048576.0, budget >> 20);
        // The budget plus the tensor the sink holds and one being reassembled past it; far below the checkpoint.
        assertThat(source.peakReassemblyBytes()).isPositive().isLessThanOrEqualTo(budget + (2L << 20));
    }
}
