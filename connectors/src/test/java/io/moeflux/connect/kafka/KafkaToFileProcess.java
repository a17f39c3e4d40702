package io.moeflux.connect.kafka;

import io.moeflux.connect.safetensors.SafetensorsSink;
import io.moeflux.connect.safetensors.SafetensorsSinkOptions;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.Progress;
import java.nio.file.Path;
import java.time.Duration;

/**
 * A Kafka -> folder copy in a JVM of its own, so a test can kill it mid-checkpoint:
 * {@code KafkaToFileProcess KAFKA_ENDPOINT OUT DELAY_MS}. Prints {@code written NAME} for every tensor
 * the sink has written and {@code committed TENSORS} once the folder is in place; each tensor waits
 * {@code DELAY_MS} first, which keeps the copy mid-way long enough to be killed there.
 */
final class KafkaToFileProcess {
    private KafkaToFileProcess() {}

    public static void main(String[] args) {
        KafkaCheckpointSource source = KafkaCheckpointSource.create(KafkaSourceOptions.from(KafkaEndpoint.parse(args[0])));
        Progress report = new Progress() {
            @Override
            public void bytesWritten(long bytes) {}

            @Override
            public void tensorWritten(String fqn) {
                System.out.println("written " + fqn);
            }
        };
        CommitSummary summary = SafetensorsSink.create(SafetensorsSinkOptions.to(Path.of(args[1])).withProgress(report))
                .write(source.describe().block(),
                        source.tensors().delayElements(Duration.ofMillis(Long.parseLong(args[2]))))
                .block();
        System.out.println("committed " + summary.tensors());
    }
}
