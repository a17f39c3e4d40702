package io.moeflux.pipeline;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.hy3.Hy3Adapter;
import io.moeflux.hy3.Hy3Config;
import io.moeflux.hy3.Hy3Options;
import io.moeflux.hy3.MergedOutput;
import io.moeflux.tensor.Box;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.SpillArea;
import io.moeflux.testing.Pieces;
import io.moeflux.testing.SyntheticHy3;
import io.moeflux.testing.TrackedTensors;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Function;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
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

    /** What a stage under test is fed. */
    enum Input {
        /** The on-disk layout, tensors whole. */
        HF,
        /** The on-disk layout, expert weights and a dense weight in pieces of some of their columns or rows. */
        HF_PIECES,
        /** The native layout, made by from-hf. */
        NATIVE,
        /** The native layout, grouped tensors in pieces: ranges of experts, and of an expert's rows. */
        NATIVE_PIECES
    }

    record NamedStage(String name, Function<Flux<TensorEvent>, Flux<TensorEvent>> stage, Input input) {
        @Override
        public String toString() {
            return name + " on " + input;
        }
    }

    static Stream<NamedStage> stages() {
        return Stream.of(
                new NamedStage("mtp filter", ADAPTER.mtpFilter(), Input.HF),
                new NamedStage("mtp filter", ADAPTER.mtpFilter(), Input.HF_PIECES),
                new NamedStage("rename", ADAPTER.renameToNative(), Input.HF),
                new NamedStage("rename", ADAPTER.renameToNative(), Input.HF_PIECES),
                new NamedStage("expert merge, whole", ADAPTER.expertMerge(MergedOutput.WHOLE), Input.HF),
                new NamedStage("expert merge, slab pieces", ADAPTER.expertMerge(MergedOutput.SLAB_PIECES), Input.HF),
                new NamedStage("expert merge, slab pieces", ADAPTER.expertMerge(MergedOutput.SLAB_PIECES), Input.HF_PIECES),
                new NamedStage("expert split", ADAPTER.expertSplit(), Input.NATIVE),
                new NamedStage("expert split", ADAPTER.expertSplit(), Input.NATIVE_PIECES),
                new NamedStage("key exclusion", ADAPTER.keyExclusion(), Input.HF_PIECES),
                new NamedStage("from-hf", ADAPTER::fromHf, Input.HF),
                new NamedStage("from-hf, slab pieces", hf -> ADAPTER.fromHf(hf, MergedOutput.SLAB_PIECES), Input.HF_PIECES),
                new NamedStage("to-hf", ADAPTER::toHf, Input.NATIVE),
                new NamedStage("to-hf", ADAPTER::toHf, Input.NATIVE_PIECES),
                new NamedStage("gather pieces", Stages.gatherPieces(SPILL), Input.HF_PIECES),
                new NamedStage("gather pieces", Stages.gatherPieces(SPILL), Input.NATIVE_PIECES));
    }

    /** Tensors of 256 bytes and more gather in file mappings, the rest in memory: both are exercised. */
    static final SpillArea SPILL = SpillArea.in(Path.of(System.getProperty("java.io.tmpdir")), 256);

    List<TensorEvent> input() {
        return SyntheticHy3.hf(t, 3, 4, 8, 6, DType.BF16);
    }

    /**
     * What {@code s} converts. The native layout is made by from-hf (its grouped tensors are views of
     * tracked tensors, so nothing they hold can leak unseen); pieces are tracked copies.
     */
    List<TensorEvent> input(NamedStage s) {
        return input(s.input());
    }

    List<TensorEvent> input(Input kind) {
        return input(kind, t);
    }

    /** The same tensors for the same seed of {@code t}. */
    static List<TensorEvent> input(Input kind, TrackedTensors t) {
        return switch (kind) {
            case HF -> SyntheticHy3.hf(t, 3, 4, 8, 6, DType.BF16);
            case HF_PIECES -> input(Input.HF, t).stream().flatMap(e -> {
                if (e.fqn().contains(".mlp.experts.") && e.fqn().endsWith("_proj.weight")) {
                    return Pieces.cut(t, e, 1, 2).stream();
                }
                return e.fqn().equals("model.embed_tokens.weight") ? Pieces.cut(t, e, 0, 3).stream() : Stream.of(e);
            }).toList();
            case NATIVE -> {
                List<TensorEvent> nativeEvents = ADAPTER.fromHf(Flux.fromIterable(input(Input.HF, t))).collectList().block();
                assertThat(nativeEvents).anyMatch(e -> e.fqn().endsWith(".mlp.experts.gate_and_up_projs"))
                        .anyMatch(e -> e.fqn().endsWith(".mlp.experts.down_projs"));
                yield nativeEvents;
            }
            case NATIVE_PIECES -> input(Input.NATIVE, t).stream().flatMap(e -> {
                if (e.fqn().endsWith(".mlp.experts.gate_and_up_projs")) {
                    return Pieces.cut(t, e, 0, 3).stream();
                }
                return e.fqn().endsWith(".mlp.experts.down_projs") ? Pieces.cut(t, e, 1, 4).stream() : Stream.of(e);
            }).toList();
        };
    }

    @Test
    void gatheringRefusesAPieceThatArrivesTwiceNamingTheRegion() {
        List<TensorEvent> pieces = Pieces.cut(t, t.event("w", DType.BF16, 6, 4), 0, 3);
        List<TensorEvent> others = Pieces.cut(t, t.event("w", DType.BF16, 6, 4), 0, 3);
        StepVerifier.create(Flux.fromIterable(List.of(pieces.get(0), pieces.get(1), others.get(1))).transform(Stages.gatherPieces(SPILL)))
                .verifyErrorMessage("tensor w: region [2:4, 0:4] arrived twice");
        pieces.get(2).release();
        others.get(0).release();
        others.get(2).release();
    }

    @Test
    void gatheringFailsAtTheEndNamingARegionThatNeverArrived() {
        List<TensorEvent> pieces = Pieces.cut(t, t.event("w", DType.BF16, 6, 4), 0, 3);
        StepVerifier.create(Flux.fromIterable(List.of(pieces.get(0), pieces.get(2))).transform(Stages.gatherPieces(SPILL)))
                .verifyErrorMessage("tensor w: region [2:4, 0:4] of [6, 4] never arrived (2 pieces did)");
        pieces.get(1).release();
    }

    @ParameterizedTest
    @MethodSource("stages")
    void piecesComeOutAsTheWholeTensorsWould(NamedStage s) {
        Input whole = s.input() == Input.HF_PIECES ? Input.HF : s.input() == Input.NATIVE_PIECES ? Input.NATIVE : s.input();
        Function<Flux<TensorEvent>, Flux<TensorEvent>> wholeStage = s.name().contains("slab pieces")
                ? (s.name().startsWith("from-hf") ? ADAPTER::fromHf : ADAPTER.expertMerge(MergedOutput.WHOLE))
                : s.stage();
        TrackedTensors forExpected = new TrackedTensors(7);
        TrackedTensors forActual = new TrackedTensors(7);
        Map<String, byte[]> expected = Pieces.assemble(Flux.fromIterable(input(whole, forExpected)).transform(wholeStage).collectList().block());
        List<TensorEvent> out = Flux.fromIterable(input(s.input(), forActual)).transform(s.stage()).collectList().block();
        if (s.name().startsWith("gather")) {
            assertThat(out).as("every tensor whole").allMatch(TensorEvent::isWhole);
        } else if (s.input() != whole || s.name().contains("slab pieces")) {
            assertThat(out).as("pieces among the output").anyMatch(e -> !e.isWhole());
        }
        Map<String, byte[]> actual = Pieces.assemble(out);
        assertThat(actual.keySet()).containsExactlyInAnyOrderElementsOf(expected.keySet());
        expected.forEach((name, bytes) -> assertThat(actual.get(name)).as(name).isEqualTo(bytes));
        assertThat(forExpected.live() + forActual.live()).as("unreleased tensors").isZero();
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
    void wholeMergeEmitsWhenItsLastExpertArrivesAndReleasesWhatItHoldsOnCancel() {
        List<TensorEvent> in = input();
        List<TensorEvent> gateUp = in.stream().filter(e -> e.fqn().startsWith("model.layers.1.mlp.experts.")
                && !e.fqn().endsWith("down_proj.weight")).toList();
        List<TensorEvent> downs = in.stream().filter(e -> e.fqn().startsWith("model.layers.1.mlp.experts.")
                && e.fqn().endsWith("down_proj.weight")).toList();
        TestPublisher<TensorEvent> source = TestPublisher.create();
        StepVerifier.create(source.flux().transform(ADAPTER.expertMerge(MergedOutput.WHOLE)).doOnNext(TensorEvent::release))
                .then(() -> gateUp.subList(0, gateUp.size() - 1).forEach(source::next))
                .then(() -> downs.subList(0, downs.size() - 1).forEach(source::next))
                .expectNoEvent(Duration.ofMillis(50))
                .then(() -> source.next(gateUp.getLast()))
                .expectNextMatches(e -> e.fqn().equals("model.layers.1.mlp.experts.gate_and_up_projs"))
                .thenCancel()
                .verify(Duration.ofSeconds(10));
        // The three downs still held were released by the cancel.
        in.stream().filter(e -> !gateUp.contains(e) && !downs.subList(0, downs.size() - 1).contains(e)).forEach(TensorEvent::release);
    }

    @org.junit.jupiter.api.Test
    void slabPieceMergeEmitsAnExpertsSlabOnceItsWeightsAreInAndReleasesAWaitingGateOnCancel() {
        List<TensorEvent> in = input();
        TensorEvent gate0 = find(in, "model.layers.1.mlp.experts.0.gate_proj.weight");
        TensorEvent up0 = find(in, "model.layers.1.mlp.experts.0.up_proj.weight");
        TensorEvent down0 = find(in, "model.layers.1.mlp.experts.0.down_proj.weight");
        TensorEvent gate1 = find(in, "model.layers.1.mlp.experts.1.gate_proj.weight");
        TestPublisher<TensorEvent> source = TestPublisher.create();
        StepVerifier.create(source.flux().transform(ADAPTER.expertMerge(MergedOutput.SLAB_PIECES)).doOnNext(TensorEvent::release))
                .then(() -> source.next(gate0))
                .expectNoEvent(Duration.ofMillis(50))
                .then(() -> source.next(up0))
                .assertNext(e -> {
                    assertThat(e.fqn()).isEqualTo("model.layers.1.mlp.experts.gate_and_up_projs");
                    assertThat(e.wholeShape()).containsExactly(4, 8, 12);
                    assertThat(e.box()).isEqualTo(new Box(new long[] {0, 0, 0}, new long[] {1, 8, 12}));
                })
                .then(() -> source.next(down0))
                .assertNext(e -> assertThat(e.box()).isEqualTo(new Box(new long[] {0, 0, 0}, new long[] {1, 6, 8})))
                .then(() -> source.next(gate1))
                .expectNoEvent(Duration.ofMillis(50))
                .thenCancel()
                .verify(Duration.ofSeconds(10));
        assertThat(isReleased(gate1)).as("the gate waiting for its up, released by the cancel").isTrue();
        in.stream().filter(e -> !List.of(gate0, up0, down0, gate1).contains(e)).forEach(TensorEvent::release);
    }

    @org.junit.jupiter.api.Test
    void aPieceOfAnExpertWeightThatWasAlreadyWholeIsADuplicate() {
        List<TensorEvent> in = input();
        TensorEvent gate0 = find(in, "model.layers.1.mlp.experts.0.gate_proj.weight");
        TensorEvent again = TensorEvent.piece(gate0.fqn(), gate0.wholeShape(), new long[] {0, 4}, t.random(DType.BF16, 6, 4));
        StepVerifier.create(Flux.just(gate0, again).transform(ADAPTER.expertMerge(MergedOutput.SLAB_PIECES)).doOnNext(TensorEvent::release))
                .verifyErrorMatches(e -> e.getMessage().contains("duplicate tensor " + gate0.fqn()) && e.getMessage().contains("[0:6, 4:8]"));
        in.stream().filter(e -> e != gate0).forEach(TensorEvent::release);
    }

    @org.junit.jupiter.api.Test
    void aWholeMergeRefusesPiecesOfExpertWeights() {
        List<TensorEvent> pieces = input(Input.HF_PIECES);
        StepVerifier.create(Flux.fromIterable(pieces).transform(ADAPTER.expertMerge(MergedOutput.WHOLE)).doOnNext(TensorEvent::release))
                .thenConsumeWhile(e -> true)
                .verifyErrorMatches(e -> e.getMessage().contains("arrived in pieces"));
        pieces.forEach(e -> {
            if (!isReleased(e)) {
                e.release();
            }
        });
    }

    private static TensorEvent find(List<TensorEvent> events, String name) {
        return events.stream().filter(e -> e.fqn().equals(name)).findFirst().orElseThrow();
    }

    private static boolean isReleased(TensorEvent e) {
        return e.tensor() instanceof io.moeflux.tensor.DenseTensor d && d.isReleased();
    }
}
