package io.moeflux.hy3;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.Tensors;
import io.moeflux.testing.Naive;
import io.moeflux.testing.SyntheticHy3;
import io.moeflux.testing.TensorBytes;
import io.moeflux.testing.TrackedTensors;
import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import java.util.stream.Collectors;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import reactor.core.publisher.Flux;

class Hy3AdapterTest {
    static final int LAYERS = 3, EXPERTS = 4, HIDDEN = 8, INTER = 6;
    static final Hy3Config CONFIG = new Hy3Config(LAYERS, EXPERTS, INTER, HIDDEN);

    final TrackedTensors t = new TrackedTensors(42);

    @AfterEach
    void everyTensorIsReleased() {
        assertThat(t.live()).as("unreleased tensors").isZero();
    }

    /** Runs a conversion and returns name -> bytes, releasing everything. */
    static Map<String, byte[]> run(Flux<TensorEvent> out) {
        Map<String, byte[]> result = new LinkedHashMap<>();
        // collectList discards what it gathered when the stream fails; the hook must sit below it.
        for (TensorEvent e : out.collectList().doOnDiscard(TensorEvent.class, TensorEvent::release).block()) {
            result.put(e.fqn(), TensorBytes.of(e.tensor()));
            e.release();
        }
        return result;
    }

    static Map<String, byte[]> bytesOf(List<TensorEvent> events) {
        Map<String, byte[]> m = new LinkedHashMap<>();
        events.forEach(e -> m.put(e.fqn(), TensorBytes.of(e.tensor())));
        return m;
    }

    @Test
    void fromHfDropsMtpRenamesAndMergesExperts() {
        List<TensorEvent> hf = SyntheticHy3.hf(t, LAYERS, EXPERTS, HIDDEN, INTER, DType.BF16);
        Map<String, byte[]> in = bytesOf(hf);
        Map<String, byte[]> out = run(new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS).fromHf(Flux.fromIterable(hf)));

        assertThat(out.keySet()).noneMatch(k -> k.startsWith("model.layers.3."));
        assertThat(out).containsKeys("model.layers.1.mlp.gate.weight", "model.layers.1.mlp.gate.e_score_correction_bias",
                "model.layers.2.mlp.shared_experts.gate_proj.weight", "model.layers.1.mlp.experts.gate_and_up_projs",
                "model.layers.1.mlp.experts.down_projs");
        assertThat(out.keySet()).noneMatch(k -> k.contains(".experts.0."));
        assertThat(out.get("model.layers.1.mlp.gate.weight")).isEqualTo(in.get("model.layers.1.mlp.router.gate.weight"));
        assertThat(out.get("model.embed_tokens.weight")).isEqualTo(in.get("model.embed_tokens.weight"));

        ByteArrayOutputStream gateUp = new ByteArrayOutputStream();
        ByteArrayOutputStream down = new ByteArrayOutputStream();
        for (int e = 0; e < EXPERTS; e++) {
            String p = "model.layers.2.mlp.experts." + e + ".";
            for (int h = 0; h < HIDDEN; h++) {
                for (int i = 0; i < INTER; i++) {
                    gateUp.writeBytes(Naive.raw(in.get(p + "gate_proj.weight"), DType.BF16, HIDDEN, i, h));
                }
                for (int i = 0; i < INTER; i++) {
                    gateUp.writeBytes(Naive.raw(in.get(p + "up_proj.weight"), DType.BF16, HIDDEN, i, h));
                }
            }
            for (int i = 0; i < INTER; i++) {
                for (int h = 0; h < HIDDEN; h++) {
                    down.writeBytes(Naive.raw(in.get(p + "down_proj.weight"), DType.BF16, INTER, h, i));
                }
            }
        }
        assertThat(out.get("model.layers.2.mlp.experts.gate_and_up_projs")).isEqualTo(gateUp.toByteArray());
        assertThat(out.get("model.layers.2.mlp.experts.down_projs")).isEqualTo(down.toByteArray());
        hf.forEach(TensorEvent::release);
    }

    @Test
    void mergedTensorsHaveTheNativeShapes() {
        List<TensorEvent> hf = SyntheticHy3.hf(t, LAYERS, EXPERTS, HIDDEN, INTER, DType.BF16);
        var plan = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS).planFromHf(hf.stream().map(e -> e.tensor().info(e.fqn())).toList());
        var byName = plan.stream().collect(Collectors.toMap(i -> i.name(), i -> i));
        assertThat(byName.get("model.layers.1.mlp.experts.gate_and_up_projs").shape()).containsExactly(EXPERTS, HIDDEN, 2 * INTER);
        assertThat(byName.get("model.layers.1.mlp.experts.down_projs").shape()).containsExactly(EXPERTS, INTER, HIDDEN);
        hf.forEach(TensorEvent::release);
    }

    @Test
    void planMatchesWhatTheConversionEmits() {
        List<TensorEvent> hf = SyntheticHy3.hf(t, LAYERS, EXPERTS, HIDDEN, INTER, DType.F32);
        Hy3Adapter adapter = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS.withExpertParallel(3, 1));
        var plan = adapter.planFromHf(hf.stream().map(e -> e.tensor().info(e.fqn())).toList());
        var emitted = adapter.fromHf(Flux.fromIterable(hf)).map(e -> {
            var info = e.tensor().info(e.fqn());
            e.release();
            return info;
        }).collectList().block();
        assertThat(emitted).containsExactlyInAnyOrderElementsOf(plan);
    }

    @Test
    void passThroughNamesTheTensorsBothDirectionsPassOnUntouchedAndNothingElse() {
        List<TensorEvent> hf = SyntheticHy3.hf(t, LAYERS, EXPERTS, HIDDEN, INTER, DType.BF16);
        List<io.moeflux.tensor.TensorInfo> hfInfos = hf.stream().map(e -> e.tensor().info(e.fqn())).toList();
        Hy3Adapter adapter = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS);

        Map<String, String> fromHf = adapter.layoutFromHf(hfInfos).passThrough();
        List<io.moeflux.tensor.TensorInfo> nativeInfos = adapter.planFromHf(hfInfos);
        Map<String, String> toHf = adapter.layoutToHf(nativeInfos).passThrough();

        assertThat(fromHf).containsEntry("model.layers.1.mlp.router.gate.weight", "model.layers.1.mlp.gate.weight")
                .containsEntry("model.embed_tokens.weight", "model.embed_tokens.weight");
        assertThat(fromHf.keySet()).noneMatch(k -> k.contains(".experts.") || k.startsWith("model.layers.3."));
        assertThat(fromHf.values()).doesNotHaveDuplicates();
        long merged = nativeInfos.stream().filter(i -> i.name().endsWith("_projs")).count();
        assertThat(merged).isPositive();
        assertThat(fromHf).hasSize((int) (nativeInfos.size() - merged));
        assertThat(toHf).containsEntry("model.layers.1.mlp.gate.weight", "model.layers.1.mlp.router.gate.weight");
        assertThat(toHf.keySet()).noneMatch(k -> k.contains(".experts."));
        hf.forEach(TensorEvent::release);
    }

    @Test
    void slabPiecesPlaceEachOfThisRanksExpertsInItsSlabWithTheOutputTypeAndMakeTheWholeTensors() {
        Hy3Adapter adapter = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS.withExpertParallel(2, 1));
        TrackedTensors same = new TrackedTensors(9);
        Map<String, byte[]> whole = io.moeflux.testing.Pieces.assemble(adapter.fromHf(Flux.fromIterable(
                SyntheticHy3.hf(same, LAYERS, EXPERTS, HIDDEN, INTER, DType.F32))).collectList().block());
        TrackedTensors again = new TrackedTensors(9);
        List<TensorEvent> pieces = adapter.fromHf(Flux.fromIterable(SyntheticHy3.hf(again, LAYERS, EXPERTS, HIDDEN, INTER, DType.F32)),
                MergedOutput.SLAB_PIECES).collectList().block();

        String experts = "model.layers.1.mlp.experts.";
        List<TensorEvent> gateUp = pieces.stream().filter(e -> e.fqn().equals(experts + "gate_and_up_projs")).toList();
        assertThat(gateUp).extracting(e -> e.wholeInfo()).containsOnly(new io.moeflux.tensor.TensorInfo(experts + "gate_and_up_projs",
                DType.BF16, new long[] {EXPERTS / 2, HIDDEN, 2 * INTER}));
        assertThat(gateUp).extracting(e -> e.box().toString()).containsExactlyInAnyOrder(
                "[0:1, 0:" + HIDDEN + ", 0:" + 2 * INTER + "]", "[1:2, 0:" + HIDDEN + ", 0:" + 2 * INTER + "]");
        assertThat(pieces.stream().filter(e -> e.fqn().equals(experts + "down_projs")).map(e -> e.box().toString()))
                .containsExactlyInAnyOrder("[0:1, 0:" + INTER + ", 0:" + HIDDEN + "]", "[1:2, 0:" + INTER + ", 0:" + HIDDEN + "]");
        Map<String, byte[]> assembled = io.moeflux.testing.Pieces.assemble(pieces);
        assertThat(assembled.keySet()).containsExactlyInAnyOrderElementsOf(whole.keySet());
        whole.forEach((name, bytes) -> assertThat(assembled.get(name)).as(name).isEqualTo(bytes));
        assertThat(same.live() + again.live()).isZero();
    }

    @Test
    void partsConvertedOnTheirOwnMakeTheWholeCheckpointWithGateAndUpInDifferentParts() {
        Hy3Adapter adapter = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS);
        Map<String, byte[]> whole = io.moeflux.testing.Pieces.assemble(adapter.fromHf(Flux.fromIterable(
                SyntheticHy3.hf(new TrackedTensors(9), LAYERS, EXPERTS, HIDDEN, INTER, DType.F32))).collectList().block());
        // Gates in part 0, ups in part 1, downs in part 2, everything else alone in part 3 (no expert at all).
        List<List<TensorEvent>> parts = List.of(new ArrayList<>(), new ArrayList<>(), new ArrayList<>(), new ArrayList<>());
        for (TensorEvent e : SyntheticHy3.hf(new TrackedTensors(9), LAYERS, EXPERTS, HIDDEN, INTER, DType.F32)) {
            int part = e.fqn().contains(".gate_proj.") ? 0 : e.fqn().contains(".up_proj.") ? 1 : e.fqn().contains(".down_proj.") ? 2 : 3;
            parts.get(part).add(e);
        }
        List<TensorEvent> out = new ArrayList<>();
        for (List<TensorEvent> part : parts) {
            out.addAll(adapter.fromHfPart(Flux.fromIterable(part)).collectList().block());
        }

        Map<String, Long> elementBytes = new LinkedHashMap<>();
        out.forEach(e -> elementBytes.merge(e.fqn(), e.box().numel() * e.tensor().dtype().byteSize(), Long::sum));
        elementBytes.forEach((name, n) -> assertThat(n).as(name + " covered once").isEqualTo(whole.get(name).length));
        Map<String, byte[]> assembled = io.moeflux.testing.Pieces.assemble(out);
        assertThat(assembled.keySet()).containsExactlyInAnyOrderElementsOf(whole.keySet());
        whole.forEach((name, bytes) -> assertThat(assembled.get(name)).as(name).isEqualTo(bytes));
    }

    @Test
    void castsFloatExpertsToTheTargetDtype() {
        List<TensorEvent> hf = SyntheticHy3.hf(t, LAYERS, EXPERTS, HIDDEN, INTER, DType.F32);
        Map<String, byte[]> in = bytesOf(hf);
        Map<String, byte[]> out = new LinkedHashMap<>();
        Map<String, DType> types = new LinkedHashMap<>();
        for (TensorEvent e : new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS).fromHf(Flux.fromIterable(hf)).collectList().block()) {
            out.put(e.fqn(), TensorBytes.of(e.tensor()));
            types.put(e.fqn(), e.tensor().dtype());
            e.release();
        }
        assertThat(types.get("model.layers.1.mlp.experts.down_projs")).isEqualTo(DType.BF16);
        assertThat(types.get("model.layers.1.mlp.gate.weight")).isEqualTo(DType.F32);
        byte[] down = out.get("model.layers.1.mlp.experts.down_projs");
        byte[] expertZero = in.get("model.layers.1.mlp.experts.0.down_proj.weight");
        // element [0][i][h] = bf16(down_0[h][i])
        assertThat(Naive.raw(down, DType.BF16, HIDDEN, 2, 5)).isEqualTo(
                Naive.encode(DType.BF16, Naive.get(expertZero, DType.F32, INTER, 5, 2)));
    }

    @Test
    void expertParallelRankKeepsItsRangeAndDoesNotSliceRouterOrBias() {
        List<TensorEvent> hf = SyntheticHy3.hf(t, LAYERS, EXPERTS, HIDDEN, INTER, DType.BF16);
        Map<String, byte[]> in = bytesOf(hf);
        Map<String, byte[]> full = null;
        List<byte[]> rankSlabs = new ArrayList<>();
        // 4 experts over 3 ranks: [0,2), [2,3), [3,4)
        int[][] ranges = {{0, 2}, {2, 3}, {3, 4}};
        for (int rank = 0; rank < 3; rank++) {
            List<TensorEvent> copy = SyntheticHy3.hf(new TrackedTensors(42), LAYERS, EXPERTS, HIDDEN, INTER, DType.BF16);
            Map<String, byte[]> out = run(new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS.withExpertParallel(3, rank)).fromHf(Flux.fromIterable(copy)));
            assertThat(out.get("model.layers.1.mlp.gate.weight")).isEqualTo(in.get("model.layers.1.mlp.router.gate.weight"));
            assertThat(out.get("model.layers.1.mlp.gate.e_score_correction_bias")).isEqualTo(in.get("model.layers.1.mlp.expert_bias"));
            int n = ranges[rank][1] - ranges[rank][0];
            assertThat(out.get("model.layers.1.mlp.experts.down_projs")).hasSize(n * INTER * HIDDEN * 2);
            rankSlabs.add(out.get("model.layers.1.mlp.experts.down_projs"));
        }
        full = run(new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS).fromHf(Flux.fromIterable(hf)));
        ByteArrayOutputStream joined = new ByteArrayOutputStream();
        rankSlabs.forEach(joined::writeBytes);
        assertThat(joined.toByteArray()).isEqualTo(full.get("model.layers.1.mlp.experts.down_projs"));
    }

    @Test
    void missingExpertsFailNamingHowManyAndTheFirstFive() {
        List<TensorEvent> hf = new ArrayList<>(SyntheticHy3.hf(t, LAYERS, EXPERTS, HIDDEN, INTER, DType.BF16));
        hf.removeIf(e -> {
            boolean drop = e.fqn().equals("model.layers.2.mlp.experts.3.up_proj.weight")
                    || e.fqn().startsWith("model.layers.1.mlp.experts.1.");
            if (drop) {
                e.release();
            }
            return drop;
        });
        assertThatThrownBy(() -> run(new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS).fromHf(Flux.fromIterable(hf))))
                .isInstanceOf(MissingExpertsException.class)
                .hasMessageContaining("4/24 required weights not found")
                .hasMessageContaining("model.layers.1.mlp.experts.1.gate_proj.weight, model.layers.1.mlp.experts.1.up_proj.weight, "
                        + "model.layers.1.mlp.experts.1.down_proj.weight, model.layers.2.mlp.experts.3.up_proj.weight");
    }

    @Test
    void aRankMissesExpertsOfALayerWhoseOtherExpertsExist() {
        List<TensorEvent> hf = new ArrayList<>(SyntheticHy3.hf(t, LAYERS, EXPERTS, HIDDEN, INTER, DType.BF16));
        hf.removeIf(e -> {
            boolean drop = e.fqn().startsWith("model.layers.1.mlp.experts.3.");
            if (drop) {
                e.release();
            }
            return drop;
        });
        var error = org.assertj.core.api.Assertions.catchThrowableOfType(MissingExpertsException.class,
                () -> run(new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS.withExpertParallel(4, 3)).fromHf(Flux.fromIterable(hf))));
        assertThat(error.missingCount()).isEqualTo(3);
        assertThat(error.firstMissing()).containsExactly("model.layers.1.mlp.experts.3.gate_proj.weight",
                "model.layers.1.mlp.experts.3.up_proj.weight", "model.layers.1.mlp.experts.3.down_proj.weight");
        assertThat(error).hasMessageContaining("(rank 3 of 4)");
    }

    @Test
    void duplicateExpertKeysFail() {
        List<TensorEvent> hf = new ArrayList<>(SyntheticHy3.hf(t, LAYERS, EXPERTS, HIDDEN, INTER, DType.BF16));
        hf.add(t.event("model.layers.1.mlp.experts.0.gate_proj.weight", DType.BF16, INTER, HIDDEN));
        assertThatThrownBy(() -> run(new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS).fromHf(Flux.fromIterable(hf).concatWith(Flux.never()))))
                .hasMessageContaining("duplicate tensor model.layers.1.mlp.experts.0.gate_proj.weight");
        hf.forEach(TensorEvent::release);
    }

    @Test
    void scaleInvKeysAreDroppedAndOthersPassThrough() {
        List<TensorEvent> in = List.of(t.event("model.layers.0.self_attn.q_proj.weight_scale_inv", DType.F32, 2),
                t.event("model.layers.1.mlp.experts.0.gate_proj.weight_scale_inv", DType.F32, 2),
                t.event("custom.thing", DType.U8, 3));
        Hy3Adapter adapter = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS.withAllowNoExperts(true));
        assertThat(run(adapter.fromHf(Flux.fromIterable(in)))).containsOnlyKeys("custom.thing");
    }

    @Property(tries = 20)
    void outputIsIdenticalWhateverTheArrivalOrder(@ForAll long seed) {
        TrackedTensors local = new TrackedTensors(1);
        List<TensorEvent> ordered = SyntheticHy3.hf(local, LAYERS, EXPERTS, HIDDEN, INTER, DType.BF16);
        Map<String, byte[]> expected = new TreeMap<>(run(new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS).fromHf(Flux.fromIterable(ordered))));
        List<TensorEvent> shuffled = new ArrayList<>(SyntheticHy3.hf(new TrackedTensors(1), LAYERS, EXPERTS, HIDDEN, INTER, DType.BF16));
        Collections.shuffle(shuffled, new Random(seed));
        Map<String, byte[]> actual = new TreeMap<>(run(new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS).fromHf(Flux.fromIterable(shuffled))));
        assertThat(actual.keySet()).isEqualTo(expected.keySet());
        expected.forEach((k, v) -> assertThat(actual.get(k)).as(k).isEqualTo(v));
        assertThat(local.live()).isZero();
    }

    @Test
    void toHfOfFromHfGivesBackTheInputWithoutMtp() {
        List<TensorEvent> hf = SyntheticHy3.hf(t, LAYERS, EXPERTS, HIDDEN, INTER, DType.BF16);
        Map<String, byte[]> in = bytesOf(hf);
        Hy3Adapter adapter = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS);
        Map<String, byte[]> back = run(adapter.toHf(adapter.fromHf(Flux.fromIterable(hf))));
        in.keySet().removeIf(k -> Hy3Keys.isMtpKey(k, LAYERS));
        assertThat(back.keySet()).containsExactlyInAnyOrderElementsOf(in.keySet());
        in.forEach((k, v) -> assertThat(back.get(k)).as(k).isEqualTo(v));
    }

    @Test
    void fromHfOfToHfGivesBackTheNativeInput() {
        Hy3Adapter adapter = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS);
        Map<String, byte[]> nativeBytes = run(adapter.fromHf(Flux.fromIterable(SyntheticHy3.hf(t, LAYERS, EXPERTS, HIDDEN, INTER, DType.BF16))));
        List<TensorEvent> nativeEvents = new ArrayList<>();
        nativeBytes.forEach((k, v) -> nativeEvents.add(new TensorEvent(k, Tensors.of(k.contains(".gate.") ? DType.F32 : DType.BF16,
                shapeOf(k), v))));
        Map<String, byte[]> again = run(adapter.fromHf(adapter.toHf(Flux.fromIterable(nativeEvents))));
        assertThat(again.keySet()).containsExactlyInAnyOrderElementsOf(nativeBytes.keySet());
        nativeBytes.forEach((k, v) -> assertThat(again.get(k)).as(k).isEqualTo(v));
    }

    private static long[] shapeOf(String nativeName) {
        if (nativeName.endsWith("gate_and_up_projs")) {
            return new long[] {EXPERTS, HIDDEN, 2 * INTER};
        }
        if (nativeName.endsWith("down_projs")) {
            return new long[] {EXPERTS, INTER, HIDDEN};
        }
        if (nativeName.endsWith("mlp.gate.weight")) {
            return new long[] {EXPERTS, HIDDEN};
        }
        if (nativeName.endsWith("e_score_correction_bias")) {
            return new long[] {EXPERTS};
        }
        if (nativeName.contains("embed_tokens") || nativeName.startsWith("lm_head")) {
            return new long[] {16, HIDDEN};
        }
        if (nativeName.endsWith("norm.weight")) {
            return new long[] {HIDDEN};
        }
        if (nativeName.endsWith("q_proj.weight")) {
            return new long[] {HIDDEN, HIDDEN};
        }
        if (nativeName.endsWith("layers.0.mlp.gate_proj.weight")) {
            return new long[] {2 * HIDDEN, HIDDEN};
        }
        if (nativeName.endsWith("layers.0.mlp.down_proj.weight")) {
            return new long[] {HIDDEN, 2 * HIDDEN};
        }
        if (nativeName.endsWith("shared_experts.gate_proj.weight")) {
            return new long[] {INTER, HIDDEN};
        }
        if (nativeName.endsWith("shared_experts.down_proj.weight")) {
            return new long[] {HIDDEN, INTER};
        }
        throw new IllegalArgumentException(nativeName);
    }

    @Test
    void singleTensorConversionEqualsTheBatchConversion() {
        Hy3Adapter adapter = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS.withExcludeKeyRegex("model\\.layers\\.2\\.mlp\\.experts\\.1\\."));
        Map<String, byte[]> nativeBytes = run(new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS)
                .fromHf(Flux.fromIterable(SyntheticHy3.hf(t, LAYERS, EXPERTS, HIDDEN, INTER, DType.BF16))));
        Map<String, byte[]> batch = new TreeMap<>();
        Map<String, byte[]> single = new TreeMap<>();
        List<TensorEvent> events = new ArrayList<>();
        nativeBytes.forEach((k, v) -> events.add(new TensorEvent(k, Tensors.of(k.contains(".gate.") ? DType.F32 : DType.BF16, shapeOf(k), v))));
        batch.putAll(run(adapter.toHf(Flux.fromIterable(events))));
        nativeBytes.forEach((k, v) -> {
            for (TensorEvent e : adapter.convertSingleTensorToHf(k, Tensors.of(k.contains(".gate.") ? DType.F32 : DType.BF16, shapeOf(k), v))) {
                single.put(e.fqn(), TensorBytes.of(e.tensor()));
                e.release();
            }
        });
        assertThat(batch.keySet()).noneMatch(k -> k.startsWith("model.layers.2.mlp.experts.1."));
        assertThat(batch.keySet()).contains("model.layers.2.mlp.experts.0.gate_proj.weight", "model.layers.1.mlp.router.gate.weight",
                "model.layers.1.mlp.expert_bias", "model.layers.1.mlp.shared_mlp.gate_proj.weight");
        assertThat(single.keySet()).isEqualTo(batch.keySet());
        batch.forEach((k, v) -> assertThat(single.get(k)).as(k).isEqualTo(v));
    }

    @Test
    void toHfRejectsAGroupedTensorWhoseFirstDimensionIsNotNumExperts() {
        Hy3Adapter adapter = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS);
        TensorEvent bad = t.event("model.layers.1.mlp.experts.gate_and_up_projs", DType.BF16, EXPERTS - 1, HIDDEN, 2 * INTER);
        assertThatThrownBy(() -> run(adapter.toHf(Flux.just(bad))))
                .hasMessageContaining("expected first dimension to be num_experts = 4");
    }

    @Test
    void toHfLeavesDownProjsOfAnotherShapeUnsplit() {
        Hy3Adapter adapter = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS);
        TensorEvent odd = t.event("model.layers.1.mlp.experts.down_projs", DType.BF16, EXPERTS, INTER + 1, HIDDEN);
        assertThat(run(adapter.toHf(Flux.just(odd)))).containsOnlyKeys("model.layers.1.mlp.experts.down_projs");
    }
}
