package io.moeflux.connect.kafka;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.connect.safetensors.ModelConfigJson;
import io.moeflux.connect.safetensors.SafetensorsSource;
import io.moeflux.hy3.Hy3Adapter;
import io.moeflux.hy3.Hy3Options;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.Progress;
import io.moeflux.tensor.TensorInfo;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;
import reactor.core.Disposable;
import reactor.core.publisher.Mono;

/** Conversions shared by the members of a consumer group on a 4-partition topic. */
@Timeout(value = 150, unit = TimeUnit.SECONDS)
class KafkaScaleOutTest {
    @RegisterExtension
    static final KafkaBroker KAFKA = new KafkaBroker();

    static final int PARTITIONS = 4;

    static KafkaGroupConversion conversion(String in, String out, String group, Progress progress) {
        return new KafkaGroupConversion(
                KafkaSourceOptions.from(KAFKA.endpoint(in, "c")),
                KafkaSinkOptions.to(KAFKA.endpoint(out, "c-out")).withChunkBytes(4096)
                        .withPartitionsIfCreated(PARTITIONS).withProgress(progress),
                group);
    }

    /** Planned on the whole checkpoint; each member converts only its partitions' layers, some without experts. */
    static final KafkaGroupConversion.Planner FROM_HF = d -> {
        var facts = ModelConfigJson.parse(d.configJson().orElseThrow(), "manifest");
        Hy3Adapter whole = new Hy3Adapter(facts, Hy3Options.DEFAULTS);
        Hy3Adapter part = new Hy3Adapter(facts, Hy3Options.DEFAULTS.withAllowNoExperts(true));
        return new KafkaGroupConversion.Plan(d.withTensors(whole.planFromHf(d.tensors().orElseThrow())), part::fromHf);
    };

    @Test
    void twoMembersConvertHalfEachIntoOneCompleteBitExactCheckpoint() throws Exception {
        KAFKA.createTopic("so-in", PARTITIONS);
        CheckpointSource hf = SafetensorsSource.open(KafkaRoundTripTest.HF);
        KafkaCheckpointSink.create(KafkaSinkOptions.to(KAFKA.endpoint("so-in", "c")).withChunkBytes(4096))
                .write(hf.describe().block(), hf.tensors()).block();

        Mono<CommitSummary> a = conversion("so-in", "so-out", "converters", Progress.NONE).run(FROM_HF);
        Mono<CommitSummary> b = conversion("so-in", "so-out", "converters", Progress.NONE).run(FROM_HF);
        var both = Mono.zip(a, b).block(Duration.ofSeconds(120));

        assertThat(both.getT1()).isEqualTo(both.getT2());
        KafkaCheckpointSource out = KafkaCheckpointSource.create(KafkaSourceOptions.from(KAFKA.endpoint("so-out", "c-out")));
        assertThat(TestCheckpoints.digest(out)).isEqualTo(TestCheckpoints.digest(KafkaRoundTripTest.NATIVE));
        assertThat(both.getT1().tensors()).isEqualTo(TestCheckpoints.digest(KafkaRoundTripTest.NATIVE).size());
    }

    /**
     * The reference's four ranks publish their DCP files as the parts of one checkpoint; two members convert
     * it, each gathering its layers' pieces from all parts, into the reference's native checkpoint.
     */
    @Test
    void twoMembersConvertACheckpointPublishedInPartsIntoTheReference() throws Exception {
        KAFKA.createTopic("so-parts-in", PARTITIONS);
        for (int r = 0; r < 4; r++) {
            CheckpointSource rank = SafetensorsSource.openPart(KafkaPartsTest.rank(r));
            KafkaEndpoint part = KafkaEndpoint.parse("kafka://" + KAFKA.bootstrapServers() + "/so-parts-in?checkpoint=c&part="
                    + r + "&parts=4");
            KafkaCheckpointSink.create(KafkaSinkOptions.to(part).withChunkBytes(4096))
                    .write(rank.describe().block(), rank.tensors()).block();
        }

        Mono<CommitSummary> a = conversion("so-parts-in", "so-parts-out", "part-converters", Progress.NONE).run(FROM_HF);
        Mono<CommitSummary> b = conversion("so-parts-in", "so-parts-out", "part-converters", Progress.NONE).run(FROM_HF);
        Mono.zip(a, b).block(Duration.ofSeconds(120));

        KafkaCheckpointSource out = KafkaCheckpointSource.create(KafkaSourceOptions.from(KAFKA.endpoint("so-parts-out", "c-out")));
        assertThat(TestCheckpoints.digest(out)).isEqualTo(TestCheckpoints.digest(KafkaRoundTripTest.NATIVE));
    }

    @Test
    void aMemberKilledMidwayLeavesTheOtherToFinishACompleteCheckpoint() throws Exception {
        List<TensorInfo> infos = TestCheckpoints.syntheticInfos(48, 8192, 16);
        KAFKA.createTopic("kill-in", PARTITIONS);
        KafkaCheckpointSink.create(KafkaSinkOptions.to(KAFKA.endpoint("kill-in", "c")).withChunkBytes(4096))
                .write(CheckpointDescriptor.UNKNOWN.withTensors(infos), TestCheckpoints.synthetic(infos, 5)).block();
        // A copy that takes its time per tensor, so both members are mid-way when one dies.
        KafkaGroupConversion.Planner slowCopy = d -> new KafkaGroupConversion.Plan(d,
                Function.<reactor.core.publisher.Flux<io.moeflux.pipeline.TensorEvent>>identity()
                        .andThen(f -> f.delayElements(Duration.ofMillis(40))));
        CountDownLatch aStarted = new CountDownLatch(2);
        CountDownLatch published = new CountDownLatch(infos.size());

        Disposable a = conversion("kill-in", "kill-out", "killers", tensorLatch(aStarted, published)).run(slowCopy)
                .subscribe();
        Mono<CommitSummary> b = conversion("kill-in", "kill-out", "killers", tensorLatch(published)).run(slowCopy).cache();
        b.subscribe();
        // A dies once it has published a little: its partitions hold far more (every partition holds
        // layers), and whatever B has by then, the checkpoint is not complete yet.
        assertThat(aStarted.await(60, TimeUnit.SECONDS)).isTrue();
        a.dispose();
        assertThat(published.getCount()).isPositive();

        CommitSummary summary = b.block(Duration.ofSeconds(120));
        assertThat(summary.tensors()).isEqualTo(infos.size());
        KafkaCheckpointSource out = KafkaCheckpointSource.create(KafkaSourceOptions.from(KAFKA.endpoint("kill-out", "c-out")));
        assertThat(TestCheckpoints.digest(out)).isEqualTo(TestCheckpoints.digest(TestCheckpoints.synthetic(infos, 5)));
    }

    private static Progress tensorLatch(CountDownLatch... latches) {
        return new Progress() {
            @Override
            public void bytesWritten(long bytes) {}

            @Override
            public void tensorWritten(String fqn) {
                for (CountDownLatch latch : latches) {
                    latch.countDown();
                }
            }
        };
    }
}
