package io.moeflux.connect.kafka;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.connect.kafka.KafkaSinkOptions.Transactions;
import io.moeflux.connect.safetensors.ModelConfigJson;
import io.moeflux.connect.safetensors.SafetensorsSink;
import io.moeflux.connect.safetensors.SafetensorsSinkOptions;
import io.moeflux.connect.safetensors.SafetensorsSource;
import io.moeflux.hy3.Hy3Adapter;
import io.moeflux.hy3.Hy3Options;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.CommitSummary;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;

/** Checkpoints through a real broker and back, bit for bit against the reference vectors. */
@Timeout(value = 90, unit = TimeUnit.SECONDS)
class KafkaRoundTripTest {
    @RegisterExtension
    static final KafkaBroker KAFKA = new KafkaBroker();

    static final Path HF = TestCheckpoints.VECTORS.resolve("hy3-tiny/hf");
    static final Path NATIVE = TestCheckpoints.VECTORS.resolve("hy3-tiny/native");

    @TempDir
    Path tmp;

    /** Small chunks, so every tensor of the tiny vectors travels as several interleaving chunks. */
    static KafkaSinkOptions sink(KafkaEndpoint endpoint) {
        return KafkaSinkOptions.to(endpoint).withChunkBytes(4096).withPartitionsIfCreated(3);
    }

    static CommitSummary publish(Path folder, KafkaSinkOptions options) throws Exception {
        CheckpointSource source = SafetensorsSource.open(folder);
        return KafkaCheckpointSink.create(options).write(source.describe().block(), source.tensors()).block();
    }

    static Path consume(KafkaEndpoint endpoint, Path out) {
        KafkaCheckpointSource source = KafkaCheckpointSource.create(KafkaSourceOptions.from(endpoint));
        SafetensorsSink.create(SafetensorsSinkOptions.to(out)).write(source.describe().block(), source.tensors()).block();
        return out;
    }

    @Test
    void fileToKafkaToFileIsBitExactWithConfig() throws Exception {
        KafkaEndpoint topic = KAFKA.endpoint("copy", "hy3-tiny");
        CommitSummary published = publish(HF, sink(topic));
        Path out = consume(topic, tmp.resolve("out"));
        assertThat(TestCheckpoints.digest(out)).isEqualTo(TestCheckpoints.digest(HF));
        assertThat(out.resolve("config.json")).hasSameBinaryContentAs(HF.resolve("config.json"));
        assertThat(published.tensors()).isEqualTo(TestCheckpoints.digest(HF).size());
        assertThat(published.location()).isEqualTo(topic.toString());
    }

    @Test
    void fromHfOverKafkaMatchesTheReference() throws Exception {
        KafkaEndpoint topic = KAFKA.endpoint("from-hf", "step-100");
        publish(HF, sink(topic));
        KafkaCheckpointSource source = KafkaCheckpointSource.create(KafkaSourceOptions.from(topic));
        CheckpointDescriptor d = source.describe().block();
        Hy3Adapter adapter = new Hy3Adapter(ModelConfigJson.parse(d.configJson().orElseThrow(), topic.toString()),
                Hy3Options.DEFAULTS);
        Path out = tmp.resolve("native");
        SafetensorsSink.create(SafetensorsSinkOptions.to(out))
                .write(d.withTensors(adapter.planFromHf(d.tensors().orElseThrow())), adapter.fromHf(source.tensors()))
                .block();
        assertThat(TestCheckpoints.digest(out)).isEqualTo(TestCheckpoints.digest(NATIVE));
    }

    @Test
    void kafkaToKafkaConversionMatchesTheReference() throws Exception {
        KafkaEndpoint in = KAFKA.endpoint("k2k-in", "ckpt");
        KafkaEndpoint out = KAFKA.endpoint("k2k-out", "ckpt-native");
        publish(HF, sink(in));
        KafkaCheckpointSource source = KafkaCheckpointSource.create(KafkaSourceOptions.from(in));
        CheckpointDescriptor d = source.describe().block();
        Hy3Adapter adapter = new Hy3Adapter(ModelConfigJson.parse(d.configJson().orElseThrow(), in.toString()),
                Hy3Options.DEFAULTS);
        KafkaCheckpointSink.create(sink(out))
                .write(d.withTensors(adapter.planFromHf(d.tensors().orElseThrow())), adapter.fromHf(source.tensors()))
                .block();
        Path file = consume(out, tmp.resolve("native"));
        assertThat(TestCheckpoints.digest(file)).isEqualTo(TestCheckpoints.digest(NATIVE));
    }

    @Test
    void transactionalPublishingPerCheckpointAndPerLayerRoundTrips() throws Exception {
        for (Transactions mode : new Transactions[] {Transactions.PER_CHECKPOINT, Transactions.PER_LAYER}) {
            KafkaEndpoint topic = KAFKA.endpoint("tx-" + mode.name().toLowerCase(), "c1");
            publish(HF, sink(topic).withTransactions(mode));
            Path out = consume(topic, tmp.resolve(mode.name()));
            assertThat(TestCheckpoints.digest(out)).as(mode.name()).isEqualTo(TestCheckpoints.digest(HF));
        }
    }

    @Test
    void withoutACheckpointIdTheNewestCompleteCheckpointIsRead() throws Exception {
        KafkaEndpoint first = KAFKA.endpoint("newest", "older");
        publish(HF, sink(first));
        publish(NATIVE, sink(KAFKA.endpoint("newest", "newer")));
        KafkaEndpoint noId = KafkaEndpoint.parse("kafka://" + KAFKA.bootstrapServers() + "/newest");
        Path out = consume(noId, tmp.resolve("newest"));
        assertThat(TestCheckpoints.digest(out)).isEqualTo(TestCheckpoints.digest(NATIVE));
    }

    @Test
    void aSourceWithoutAPlanIsPublishedAndReadBack() throws Exception {
        KafkaEndpoint topic = KAFKA.endpoint("unplanned", "c1");
        CheckpointSource source = SafetensorsSource.open(HF);
        KafkaCheckpointSink.create(sink(topic)).write(CheckpointDescriptor.UNKNOWN, source.tensors()).block();
        KafkaCheckpointSource back = KafkaCheckpointSource.create(KafkaSourceOptions.from(topic));
        assertThat(back.describe().block().tensors()).isEmpty();
        assertThat(TestCheckpoints.digest(back)).isEqualTo(TestCheckpoints.digest(HF));
    }
}
