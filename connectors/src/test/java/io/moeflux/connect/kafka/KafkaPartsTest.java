package io.moeflux.connect.kafka;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.moeflux.connect.safetensors.SafetensorsSink;
import io.moeflux.connect.safetensors.SafetensorsSinkOptions;
import io.moeflux.connect.safetensors.SafetensorsSource;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.tensor.TensorInfo;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Schedulers;

/**
 * A checkpoint published by many publishers, one part each (a rank's file of a DCP save), read back as one:
 * the reader waits for every part's manifest and commit records and writes every piece into place.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class KafkaPartsTest {
    @RegisterExtension
    static final KafkaBroker KAFKA = new KafkaBroker();

    static final Path RANKS = TestCheckpoints.VECTORS.resolve("hy3-tiny-dcp/sharded");
    static final Path HF = TestCheckpoints.VECTORS.resolve("hy3-tiny/hf");

    @TempDir
    Path tmp;

    static Path rank(int part) {
        return RANKS.resolve(String.format("shard-%05d-model-00001-of-00001.safetensors", part + 1));
    }

    private static KafkaEndpoint part(String topic, String checkpoint, int part, int parts) {
        return KafkaEndpoint.parse("kafka://" + KAFKA.bootstrapServers() + "/" + topic + "?checkpoint=" + checkpoint
                + "&part=" + part + "&parts=" + parts);
    }

    /** Part {@code part}'s rank file published as that part, on its own thread. */
    private static Mono<CommitSummary> publish(Path file, KafkaEndpoint endpoint) {
        return Mono.defer(() -> {
            CheckpointSource source;
            try {
                source = SafetensorsSource.openPart(file);
            } catch (java.io.IOException e) {
                return Mono.error(e);
            }
            KafkaSinkOptions options = KafkaSinkOptions.to(endpoint).withChunkBytes(4096).withPartitionsIfCreated(3);
            return KafkaCheckpointSink.create(options).write(source.describe().block(), source.tensors());
        }).subscribeOn(Schedulers.boundedElastic());
    }

    private static Path consume(KafkaEndpoint endpoint, Path out) {
        KafkaCheckpointSource source = KafkaCheckpointSource.create(KafkaSourceOptions.from(endpoint)
                .withStallTimeout(Duration.ofSeconds(5)));
        SafetensorsSink.create(SafetensorsSinkOptions.to(out)).write(source.describe().block(), source.tensors()).block();
        return out;
    }

    @Test
    void fourRanksPublishedAtOnceAsPartsReadBackAsTheReferenceCheckpoint() throws Exception {
        List<Mono<CommitSummary>> parts = new ArrayList<>();
        for (int p = 0; p < 4; p++) {
            parts.add(publish(rank(p), part("ranks", "step-1", p, 4)));
        }
        List<CommitSummary> published = Flux.merge(parts).collectList().block();
        assertThat(published).hasSize(4);

        Path out = consume(KAFKA.endpoint("ranks", "step-1"), tmp.resolve("out"));
        assertThat(TestCheckpoints.digest(SafetensorsSource.open(out))).isEqualTo(TestCheckpoints.digest(SafetensorsSource.open(HF)));
    }

    @Test
    void theNewestCheckpointIsOneWhosePartsHaveAllCommitted() throws Exception {
        for (int p = 0; p < 4; p++) {
            publish(rank(p), part("newest", "complete", p, 4)).block();
        }
        // A later checkpoint with one of its two parts committed is not complete yet.
        publish(rank(0), part("newest", "half", 0, 2)).block();
        KafkaEndpoint topic = KafkaEndpoint.parse("kafka://" + KAFKA.bootstrapServers() + "/newest");
        Path out = consume(topic, tmp.resolve("out"));
        assertThat(TestCheckpoints.digest(SafetensorsSource.open(out))).isEqualTo(TestCheckpoints.digest(SafetensorsSource.open(HF)));
    }

    @Test
    void aPartThatNeverPublishesIsNamedWhenTheReaderGivesUp() {
        for (int p = 0; p < 3; p++) {
            publish(rank(p), part("missing", "step-2", p, 4)).block();
        }
        assertThatThrownBy(() -> consume(KAFKA.endpoint("missing", "step-2"), tmp.resolve("out")))
                .hasMessageContaining("the manifests of 3 of the 4 parts of checkpoint step-2; parts [3] have published none");
        assertThat(tmp.resolve("out")).doesNotExist();
    }

    @Test
    void partsThatOverlapFailTheReadAndCommitNothing() {
        // Rank 1's file published as both parts of a two-part checkpoint: every piece arrives twice.
        publish(rank(1), part("overlap", "step-3", 0, 2)).block();
        publish(rank(1), part("overlap", "step-3", 1, 2)).block();
        // A replicated tensor (a norm) sent whole by both parts is a duplicate, a piece sent twice an overlap.
        assertThatThrownBy(() -> consume(KAFKA.endpoint("overlap", "step-3"), tmp.resolve("out")))
                .message().containsAnyOf("duplicate tensor model.", "arrived twice");
        assertThat(tmp.resolve("out")).doesNotExist();
    }

    @Test
    void partsThatLeaveAGapFailAtTheCommitNamingTheRegion() {
        publish(rank(0), part("gap", "step-4", 0, 2)).block();
        publish(rank(2), part("gap", "step-4", 1, 2)).block();
        assertThatThrownBy(() -> consume(KAFKA.endpoint("gap", "step-4"), tmp.resolve("out")))
                .hasMessageContaining("never arrived");
        assertThat(tmp.resolve("out")).doesNotExist();
    }

    @Test
    void aCheckpointInTheFirstWireFormatIsStillRead() throws Exception {
        // What a publisher of moeflux-kafka/1 wrote: the same records, its manifest and commit records saying version 1.
        List<TensorInfo> infos = SafetensorsSource.open(HF).describe().block().tensors().orElseThrow();
        // Chunks of 1 MiB: the manifest is one record, so its version can be rewritten in place.
        RawPublisher publisher = new RawPublisher(KAFKA.bootstrapServers(), "version-1", 2, 1 << 20);
        KAFKA.createTopic("version-1", 2);
        List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
        for (ProducerRecord<byte[], byte[]> r : publisher.records("old", infos, 7)) {
            String type = WireFormat.typeOf(r.headers());
            byte[] value = r.value();
            if (type.equals(WireFormat.MANIFEST) || type.equals(WireFormat.COMMIT)) {
                String json = new String(value, StandardCharsets.UTF_8);
                assertThat(json).contains("\"format\":\"moeflux-kafka/2\"");
                value = json.replace("moeflux-kafka/2", "moeflux-kafka/1").getBytes(StandardCharsets.UTF_8);
            }
            records.add(new ProducerRecord<>(r.topic(), r.partition(), r.key(), value, r.headers()));
        }
        publisher.send(records);
        Path out = consume(KAFKA.endpoint("version-1", "old"), tmp.resolve("out"));
        assertThat(TestCheckpoints.digest(SafetensorsSource.open(out)))
                .isEqualTo(TestCheckpoints.digest(TestCheckpoints.synthetic(infos, 7)));
        assertThat(Files.exists(out)).isTrue();
    }

    @Test
    void aPartsChunkHeadersNameThePartAndThePiecesOffsets() throws Exception {
        CheckpointSource source = SafetensorsSource.openPart(rank(2));
        Chunker chunker = new Chunker("t", "c", 4096, Optional.of(new KafkaEndpoint.PartOf(2, 4)));
        var event = source.tensors().filter(e -> !e.isWhole() || e.box().offset(0) > 0).blockFirst();
        var record = chunker.chunks(event).blockFirst();
        assertThat(WireFormat.text(record.headers(), WireFormat.PART)).hasValue("2");
        assertThat(WireFormat.text(record.headers(), WireFormat.OFFSETS)).hasValue(WireFormat.shapeText(event.box().offsets()));
        assertThat(WireFormat.text(record.headers(), WireFormat.SHAPE)).hasValue(WireFormat.shapeText(event.tensor().shape()));
    }
}
