package io.moeflux.pipeline;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.hy3.Hy3Adapter;
import io.moeflux.hy3.Hy3Config;
import io.moeflux.hy3.Hy3Options;
import io.moeflux.tensor.DType;
import io.moeflux.testing.SyntheticHy3;
import io.moeflux.testing.TrackedTensors;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Function;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import reactor.core.publisher.Flux;
import reactor.test.StepVerifier;
import reactor.test.publisher.TestPublisher;

/**
 * Every stage under the reactive contract: complete, source error, user-function error, cancel and
 * discard, with bounded demand upstream, and never a leaked tensor.
 */
class StagesReactiveTest {
    static final Hy3Config CONFIG = new Hy3Config(3, 4, 6, 8);
    static final Hy3Adapter ADAPTER = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS.withExcludeKeyRegex("model\\.norm"));

    final TrackedTensors t = new TrackedTensors(3);

    @AfterEach
    void nothingLeaks() {
        assertThat(t.live()).as("unreleased tensors").isZero();
    }

    /** A stage under test and whether it takes the native layout (grouped expert tensors) rather than the on-disk one. */
    record NamedStage(String name, Function<Flux<TensorEvent>, Flux<TensorEvent>> stage, boolean takesNative) {
        NamedStage(String name, Function<Flux<TensorEvent>, Flux<TensorEvent>> stage) {
            this(name, stage, false);
        }

        @Override
        public String toString() {
            return name;
        }
    }

    static Stream<NamedStage> stages() {
        return Stream.of(
                new NamedStage("mtp filter", ADAPTER.mtpFilter()),
                new NamedStage("rename", ADAPTER.renameToNative()),
                new NamedStage("expert merge", ADAPTER.expertMerge()),
                new NamedStage("expert split", ADAPTER.expertSplit(), true),
                new NamedStage("key exclusion", ADAPTER.keyExclusion()),
                new NamedStage("from-hf", ADAPTER::fromHf),
                new NamedStage("to-hf", ADAPTER::toHf, true));
    }

    List<TensorEvent> input() {
        return SyntheticHy3.hf(t, 3, 4, 8, 6, DType.BF16);
    }

    /**
     * What {@code s} converts: the on-disk layout, or for the split stages the native one, made by
     * from-hf (its grouped tensors are views of tracked tensors, so nothing they hold can leak unseen).
     */
    List<TensorEvent> input(NamedStage s) {
        if (!s.takesNative()) {
            return input();
        }
        List<TensorEvent> nativeEvents = ADAPTER.fromHf(Flux.fromIterable(input())).collectList().block();
        assertThat(nativeEvents).anyMatch(e -> e.fqn().endsWith(".mlp.experts.gate_and_up_projs"))
                .anyMatch(e -> e.fqn().endsWith(".mlp.experts.down_projs"));
        return nativeEvents;
    }

    @ParameterizedTest
    @MethodSource("stages")
    void completesAndReleasesWhatItDrops(NamedStage s) {
        StepVerifier.create(Flux.fromIterable(input(s)).transform(s.stage()).doOnNext(TensorEvent::release))
                .thenConsumeWhile(e -> true)
                .verifyComplete();
    }

    @ParameterizedTest
    @MethodSource("stages")
    void requestsBoundedDemandUpstream(NamedStage s) {
        AtomicLong requested = new AtomicLong();
        List<TensorEvent> in = input(s);
        Flux<TensorEvent> out = Flux.fromIterable(in)
                .doOnRequest(n -> requested.accumulateAndGet(n, (a, b) -> a == Long.MAX_VALUE || b == Long.MAX_VALUE ? Long.MAX_VALUE : a + b))
                .transform(s.stage());
        StepVerifier.create(out.doOnNext(TensorEvent::release), 1)
                .expectNextCount(1)
                .then(() -> assertThat(requested.get()).as("upstream demand after one request").isLessThan(Long.MAX_VALUE))
                .thenCancel()
                .verify(Duration.ofSeconds(10));
        // Release what the source never emitted; what it did emit the stage owned.
        in.forEach(e -> {
            if (!isReleased(e)) {
                e.release();
            }
        });
    }

    @ParameterizedTest
    @MethodSource("stages")
    void sourceErrorPropagatesAndReleasesHeldTensors(NamedStage s) {
        List<TensorEvent> in = input(s);
        Flux<TensorEvent> failing = Flux.fromIterable(in.subList(0, in.size() / 2))
                .concatWith(Flux.error(new IllegalStateException("disk gone")));
        StepVerifier.create(failing.transform(s.stage()).doOnNext(TensorEvent::release))
                .thenConsumeWhile(e -> true)
                .verifyErrorMessage("disk gone");
        in.subList(in.size() / 2, in.size()).forEach(TensorEvent::release);
    }

    @ParameterizedTest
    @MethodSource("stages")
    void cancelReleasesHeldTensors(NamedStage s) {
        List<TensorEvent> in = input(s);
        Flux<TensorEvent> stalled = Flux.fromIterable(in.subList(0, 12)).concatWith(Flux.never());
        StepVerifier.create(stalled.transform(s.stage()).doOnNext(TensorEvent::release))
                .thenAwait(Duration.ofMillis(20))
                .thenCancel()
                .verify(Duration.ofSeconds(10));
        in.subList(12, in.size()).forEach(TensorEvent::release);
    }

    @ParameterizedTest
    @MethodSource("stages")
    void downstreamErrorReleasesTheRest(NamedStage s) {
        List<TensorEvent> in = input(s);
        Flux<TensorEvent> out = Flux.fromIterable(in).transform(s.stage())
                .map(e -> {
                    e.release();
                    throw new IllegalArgumentException("consumer failed");
                });
        StepVerifier.create(out).verifyErrorMessage("consumer failed");
        in.forEach(e -> {
            if (!isReleased(e)) {
                e.release();
            }
        });
    }

    @org.junit.jupiter.api.Test
    void userFunctionErrorInRenameFailsTheStreamAndReleasesTheEvent() {
        List<TensorEvent> in = input();
        Flux<TensorEvent> out = Flux.fromIterable(in).transform(Stages.rename(name -> {
            if (name.contains("layers.1.")) {
                throw new IllegalStateException("bad name " + name);
            }
            return name;
        }));
        StepVerifier.create(out.doOnNext(TensorEvent::release))
                .thenConsumeWhile(e -> true)
                .verifyErrorMatches(e -> e.getMessage().startsWith("bad name model.layers.1."));
        in.forEach(e -> {
            if (!isReleased(e)) {
                e.release();
            }
        });
    }

    @org.junit.jupiter.api.Test
    void userFunctionErrorInFilterFailsTheStreamAndReleasesTheEvent() {
        List<TensorEvent> in = input();
        Flux<TensorEvent> out = Flux.fromIterable(in).transform(Stages.filter(name -> {
            throw new IllegalStateException("predicate broke");
        }));
        StepVerifier.create(out).verifyErrorMessage("predicate broke");
        in.forEach(e -> {
            if (!isReleased(e)) {
                e.release();
            }
        });
    }

    @org.junit.jupiter.api.Test
    void mergeWindowEmitsWhenItsLastExpertArrivesAndReleasesOpenWindowsOnCancel() {
        List<TensorEvent> in = input();
        List<TensorEvent> gateUp = in.stream().filter(e -> e.fqn().startsWith("model.layers.1.mlp.experts.")
                && !e.fqn().endsWith("down_proj.weight")).toList();
        List<TensorEvent> downs = in.stream().filter(e -> e.fqn().startsWith("model.layers.1.mlp.experts.")
                && e.fqn().endsWith("down_proj.weight")).toList();
        TestPublisher<TensorEvent> source = TestPublisher.create();
        StepVerifier.create(source.flux().transform(ADAPTER.expertMerge()).doOnNext(TensorEvent::release))
                .then(() -> gateUp.subList(0, gateUp.size() - 1).forEach(source::next))
                .then(() -> downs.subList(0, downs.size() - 1).forEach(source::next))
                .expectNoEvent(Duration.ofMillis(50))
                .then(() -> source.next(gateUp.getLast()))
                .expectNextMatches(e -> e.fqn().equals("model.layers.1.mlp.experts.gate_and_up_projs"))
                .thenCancel()
                .verify(Duration.ofSeconds(10));
        // The three downs of the still-open window were released by the cancel.
        in.stream().filter(e -> !gateUp.contains(e) && !downs.subList(0, downs.size() - 1).contains(e)).forEach(TensorEvent::release);
    }

    private static boolean isReleased(TensorEvent e) {
        return e.tensor() instanceof io.moeflux.tensor.DenseTensor d && d.isReleased();
    }
}
