package io.moeflux.hy3;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.Tensors;
import io.moeflux.testing.TensorBytes;
import io.moeflux.testing.TrackedTensors;
import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import reactor.core.publisher.Flux;
import reactor.test.StepVerifier;

/** The expert LoRA rules of both directions, against element-by-element transcriptions of the mixin. */
class ExpertLoraTest {
    static final int E = 4, H = 6, I = 3, R = 2;
    static final Hy3Config CONFIG = new Hy3Config(3, E, I, H);
    static final String PEFT = "base_model.model.model.";
    static final String[] PROJ = {"gate_proj", "up_proj", "down_proj"};

    final TrackedTensors t = new TrackedTensors(7);
    final Hy3Adapter strict = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS);
    final Hy3Adapter lossy = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS.withLossyLora(true));

    @AfterEach
    void everyTensorIsReleased() {
        assertThat(t.live()).as("unreleased tensors").isZero();
    }

    // ---- helpers: inputs, and the mixin's algebra written out element by element ----

    /** [rows, cols] -> [cols, rows]. */
    static byte[] transpose(byte[] m, DType d, int rows, int cols) {
        int b = d.byteSize();
        byte[] out = new byte[m.length];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < cols; c++) {
                System.arraycopy(m, (r * cols + c) * b, out, (c * rows + r) * b, b);
            }
        }
        return out;
    }

    /** Columns [from, from + n) of a row-major [rows, cols] matrix. */
    static byte[] columns(byte[] m, DType d, int rows, int cols, int from, int n) {
        int b = d.byteSize();
        byte[] out = new byte[rows * n * b];
        for (int r = 0; r < rows; r++) {
            System.arraycopy(m, (r * cols + from) * b, out, r * n * b, n * b);
        }
        return out;
    }

    static byte[] slab(byte[] grouped, int e, int slabBytes) {
        byte[] out = new byte[slabBytes];
        System.arraycopy(grouped, e * slabBytes, out, 0, slabBytes);
        return out;
    }

    /** Per-expert on-disk LoRA of one layer: name -> event, for the given experts and groups ("gate_proj.lora_A" ...). */
    List<TensorEvent> perExpert(String prefix, int layer, DType d, List<Integer> experts, List<String> groups) {
        List<TensorEvent> out = new ArrayList<>();
        for (int e : experts) {
            for (String g : groups) {
                String key = prefix + "layers." + layer + ".mlp.experts." + e + "." + g + ".weight";
                long[] shape = switch (g) {
                    case "gate_proj.lora_A", "up_proj.lora_A" -> new long[] {R, H};
                    case "gate_proj.lora_B", "up_proj.lora_B" -> new long[] {I, R};
                    case "down_proj.lora_A" -> new long[] {R, I};
                    default -> new long[] {H, R};
                };
                out.add(t.event(key, d, shape));
            }
        }
        return out;
    }

    static final List<String> SIX = List.of("gate_proj.lora_A", "gate_proj.lora_B", "up_proj.lora_A", "up_proj.lora_B",
            "down_proj.lora_A", "down_proj.lora_B");

    static List<Integer> experts(int from, int to) {
        List<Integer> l = new ArrayList<>();
        for (int e = from; e < to; e++) {
            l.add(e);
        }
        return l;
    }

    /** Makes every expert's up_proj.lora_A hold its gate_proj.lora_A's bytes, as an adapter saved by to-hf does. */
    List<TensorEvent> shareA(List<TensorEvent> in) {
        Map<String, byte[]> gateA = new LinkedHashMap<>();
        in.stream().filter(e -> e.fqn().endsWith("gate_proj.lora_A.weight")).forEach(e -> gateA.put(e.fqn(), TensorBytes.of(e.tensor())));
        List<TensorEvent> out = new ArrayList<>();
        for (TensorEvent e : in) {
            if (e.fqn().endsWith("up_proj.lora_A.weight")) {
                byte[] bytes = gateA.get(e.fqn().replace("up_proj.lora_A", "gate_proj.lora_A"));
                DType d = e.tensor().dtype();
                long[] shape = e.tensor().shape();
                e.release();
                out.add(new TensorEvent(e.fqn(), Tensors.of(d, shape, bytes)));
            } else {
                out.add(e);
            }
        }
        return out;
    }

    static Map<String, byte[]> bytesOf(List<TensorEvent> events) {
        Map<String, byte[]> m = new LinkedHashMap<>();
        events.forEach(e -> m.put(e.fqn(), TensorBytes.of(e.tensor())));
        return m;
    }

    static Map<String, long[]> shapesOf(Flux<TensorEvent> out) {
        Map<String, long[]> m = new LinkedHashMap<>();
        for (TensorEvent e : out.collectList().doOnDiscard(TensorEvent.class, TensorEvent::release).block()) {
            m.put(e.fqn(), e.tensor().shape());
            e.release();
        }
        return m;
    }

    // ---- to-hf ----

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16"})
    void toHfGivesEachExpertItsLoraPairsUnderTheKeysOwnPrefix(DType d) {
        String experts = PEFT + "layers.1.mlp.experts.";
        List<TensorEvent> in = List.of(t.event(experts + "lora_gate_and_up_A", d, E, H, R),
                t.event(experts + "lora_gate_and_up_B", d, E, R, 2 * I),
                t.event(experts + "lora_down_A", d, E, I, R),
                t.event(experts + "lora_down_B", d, E, R, H));
        Map<String, byte[]> grouped = bytesOf(in);
        Map<String, byte[]> out = Hy3AdapterTest.run(strict.toHf(Flux.fromIterable(in)));

        assertThat(out).hasSize(E * 6);
        int b = d.byteSize();
        for (int e = 0; e < E; e++) {
            String p = experts + e + ".";
            byte[] a = slab(grouped.get(experts + "lora_gate_and_up_A"), e, H * R * b);
            byte[] bb = slab(grouped.get(experts + "lora_gate_and_up_B"), e, R * 2 * I * b);
            assertThat(out.get(p + "gate_proj.lora_A.weight")).isEqualTo(transpose(a, d, H, R));
            assertThat(out.get(p + "up_proj.lora_A.weight")).as("the same bytes again").isEqualTo(transpose(a, d, H, R));
            assertThat(out.get(p + "gate_proj.lora_B.weight")).isEqualTo(transpose(columns(bb, d, R, 2 * I, 0, I), d, R, I));
            assertThat(out.get(p + "up_proj.lora_B.weight")).isEqualTo(transpose(columns(bb, d, R, 2 * I, I, I), d, R, I));
            assertThat(out.get(p + "down_proj.lora_A.weight"))
                    .isEqualTo(transpose(slab(grouped.get(experts + "lora_down_A"), e, I * R * b), d, I, R));
            assertThat(out.get(p + "down_proj.lora_B.weight"))
                    .isEqualTo(transpose(slab(grouped.get(experts + "lora_down_B"), e, R * H * b), d, R, H));
        }
    }

    @Test
    void toHfShapesAndRenamesOfSharedExpertAndRouterLora() {
        List<TensorEvent> in = List.of(t.event("model.layers.1.mlp.experts.lora_down_B", DType.F32, E, R, H),
                t.event("model.layers.1.mlp.shared_experts.gate_proj.lora_A.weight", DType.F32, R, H),
                t.event("model.layers.1.mlp.gate.lora_A.weight", DType.F32, R, H),
                t.event("lora_down_A", DType.F32, E, I, R));
        Map<String, long[]> out = shapesOf(strict.toHf(Flux.fromIterable(in)));
        assertThat(out.get("model.layers.1.mlp.experts.3.down_proj.lora_B.weight")).containsExactly(H, R);
        assertThat(out).containsKeys("model.layers.1.mlp.shared_mlp.gate_proj.lora_A.weight",
                "model.layers.1.mlp.gate.lora_A.weight", "lora_down_A");
    }

    @Test
    void toHfRefusesAGroupedLoraWhoseFirstDimensionIsNotNumExperts() {
        String name = "model.layers.1.mlp.experts.lora_down_A";
        assertThatThrownBy(() -> shapesOf(strict.toHf(Flux.just(t.event(name, DType.F32, E + 1, I, R)))))
                .hasMessageContaining(name).hasMessageContaining("has " + (E + 1) + " experts").hasMessageContaining("num_experts = " + E);
    }

    @Test
    void perTensorToHfEqualsTheStreamStage() {
        List<TensorEvent> in = List.of(t.event("model.layers.2.mlp.experts.lora_gate_and_up_B", DType.BF16, E, R, 2 * I),
                t.event("model.layers.2.mlp.experts.lora_gate_and_up_A", DType.BF16, E, H, R));
        Map<String, byte[]> perTensor = new LinkedHashMap<>();
        for (TensorEvent e : in) {
            List<TensorEvent> split = strict.convertSingleTensorToHf(e.fqn(), Tensors.of(e.tensor().dtype(), e.tensor().shape(),
                    TensorBytes.of(e.tensor())));
            perTensor.putAll(bytesOf(split));
            split.forEach(TensorEvent::release);
        }
        assertThat(Hy3AdapterTest.run(strict.toHf(Flux.fromIterable(in)))).containsExactlyInAnyOrderEntriesOf(perTensor);
    }

    // ---- from-hf ----

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"F32", "BF16"})
    void fromHfStacksACompleteLayersPerExpertLoraWithoutCasting(DType d) {
        List<TensorEvent> in = shareA(perExpert(PEFT, 1, d, experts(0, E), SIX));
        Map<String, byte[]> src = bytesOf(in);
        Map<String, byte[]> out = Hy3AdapterTest.run(strict.fromHf(Flux.fromIterable(in)));

        String g = PEFT + "layers.1.mlp.experts.";
        assertThat(out.keySet()).containsExactlyInAnyOrder(g + "lora_gate_and_up_A", g + "lora_gate_and_up_B", g + "lora_down_A", g + "lora_down_B");
        ByteArrayOutputStream a = new ByteArrayOutputStream(), b = new ByteArrayOutputStream();
        ByteArrayOutputStream da = new ByteArrayOutputStream(), db = new ByteArrayOutputStream();
        for (int e = 0; e < E; e++) {
            String p = g + e + ".";
            a.writeBytes(transpose(src.get(p + "gate_proj.lora_A.weight"), d, R, H));
            byte[] gateT = transpose(src.get(p + "gate_proj.lora_B.weight"), d, I, R);
            byte[] upT = transpose(src.get(p + "up_proj.lora_B.weight"), d, I, R);
            int rowBytes = I * d.byteSize();
            for (int r = 0; r < R; r++) {
                b.write(gateT, r * rowBytes, rowBytes);
                b.write(upT, r * rowBytes, rowBytes);
            }
            da.writeBytes(transpose(src.get(p + "down_proj.lora_A.weight"), d, R, I));
            db.writeBytes(transpose(src.get(p + "down_proj.lora_B.weight"), d, H, R));
        }
        assertThat(out.get(g + "lora_gate_and_up_A")).isEqualTo(a.toByteArray());
        assertThat(out.get(g + "lora_gate_and_up_B")).isEqualTo(b.toByteArray());
        assertThat(out.get(g + "lora_down_A")).isEqualTo(da.toByteArray());
        assertThat(out.get(g + "lora_down_B")).isEqualTo(db.toByteArray());
    }

    @Test
    void roundTripsBothWaysAreBitExact() {
        List<TensorEvent> hf = shareA(perExpert("model.", 2, DType.BF16, experts(0, E), SIX));
        Map<String, byte[]> original = bytesOf(hf);
        Map<String, byte[]> nativeBytes = Hy3AdapterTest.run(strict.fromHf(Flux.fromIterable(hf)));
        Map<String, long[]> nativeShapes = Map.of(
                "model.layers.2.mlp.experts.lora_gate_and_up_A", new long[] {E, H, R},
                "model.layers.2.mlp.experts.lora_gate_and_up_B", new long[] {E, R, 2 * I},
                "model.layers.2.mlp.experts.lora_down_A", new long[] {E, I, R},
                "model.layers.2.mlp.experts.lora_down_B", new long[] {E, R, H});
        List<TensorEvent> nativeEvents = new ArrayList<>();
        nativeBytes.forEach((k, v) -> nativeEvents.add(new TensorEvent(k, Tensors.of(DType.BF16, nativeShapes.get(k), v))));
        Map<String, byte[]> back = Hy3AdapterTest.run(strict.toHf(Flux.fromIterable(nativeEvents)));
        assertThat(back).containsExactlyInAnyOrderEntriesOf(original);

        List<TensorEvent> again = new ArrayList<>();
        back.forEach((k, v) -> again.add(new TensorEvent(k, Tensors.of(DType.BF16, shapeOf(k), v))));
        assertThat(Hy3AdapterTest.run(strict.fromHf(Flux.fromIterable(again)))).containsExactlyInAnyOrderEntriesOf(nativeBytes);
    }

    static long[] shapeOf(String perExpertKey) {
        if (perExpertKey.contains("_proj.lora_A") && !perExpertKey.contains("down_proj")) {
            return new long[] {R, H};
        }
        if (perExpertKey.contains("down_proj.lora_A")) {
            return new long[] {R, I};
        }
        return perExpertKey.contains("down_proj") ? new long[] {H, R} : new long[] {I, R};
    }

    @Test
    void mtpFilterIsAnchoredSoAPeftPrefixedLayerPastTheLastIsKept() {
        List<TensorEvent> in = List.of(t.event(PEFT + "layers.3.self_attn.q_proj.lora_A.weight", DType.BF16, R, H),
                t.event("model.layers.3.self_attn.q_proj.lora_A.weight", DType.BF16, R, H));
        Hy3Adapter noExperts = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS.withAllowNoExperts(true));
        assertThat(shapesOf(noExperts.fromHf(Flux.fromIterable(in)))).containsOnlyKeys(PEFT + "layers.3.self_attn.q_proj.lora_A.weight");
    }

    @Test
    void baseExpertsUnderAnotherPrefixPassPerExpertUncastAndLoraStillStacksUnderEp() {
        List<TensorEvent> in = new ArrayList<>();
        for (int e = 0; e < E; e++) {
            in.add(t.event(PEFT + "layers.1.mlp.experts." + e + ".gate_proj.weight", DType.F32, I, H));
            in.add(t.event(PEFT + "layers.1.mlp.experts." + e + ".up_proj.weight", DType.F32, I, H));
            in.add(t.event(PEFT + "layers.1.mlp.experts." + e + ".down_proj.weight", DType.F32, H, I));
        }
        in.addAll(shareA(perExpert(PEFT, 1, DType.F32, experts(0, E), SIX)));
        Hy3Adapter rank1 = new Hy3Adapter(CONFIG, Hy3Options.DEFAULTS.withExpertParallel(2, 1));
        Map<String, long[]> out = shapesOf(rank1.fromHf(Flux.fromIterable(in)));
        assertThat(out.get(PEFT + "layers.1.mlp.experts.0.gate_proj.weight")).as("not merged, not sliced").containsExactly(I, H);
        assertThat(out.get(PEFT + "layers.1.mlp.experts.lora_gate_and_up_A")).as("EP does not slice LoRA").containsExactly(E, H, R);
    }

    @Test
    void completenessCheckLearnsAnUnusualPrefixFromTheFirstExpertKey() {
        List<TensorEvent> in = new ArrayList<>();
        for (int e = 0; e < E - 1; e++) {
            in.add(t.event(PEFT + "layers.1.mlp.experts." + e + ".gate_proj.weight", DType.BF16, I, H));
            in.add(t.event(PEFT + "layers.1.mlp.experts." + e + ".up_proj.weight", DType.BF16, I, H));
            in.add(t.event(PEFT + "layers.1.mlp.experts." + e + ".down_proj.weight", DType.BF16, H, I));
        }
        assertThatThrownBy(() -> shapesOf(strict.fromHf(Flux.fromIterable(in))))
                .isInstanceOf(MissingExpertsException.class)
                .hasMessageContaining("3/" + (E * 3))
                .hasMessageContaining(PEFT + "layers.1.mlp.experts.3.gate_proj.weight");
    }

    @Test
    void anAdapterOnlyCheckpointIsNotCheckedForBaseExperts() {
        List<TensorEvent> in = shareA(perExpert("model.", 1, DType.BF16, experts(0, E), SIX));
        assertThat(shapesOf(strict.fromHf(Flux.fromIterable(in)))).hasSize(4);
    }

    @Test
    void aPartialAdapterPassesOnPerExpertInBothModes() {
        for (Hy3Adapter adapter : List.of(strict, lossy)) {
            List<TensorEvent> in = perExpert("model.", 1, DType.BF16, experts(2, 4), SIX);
            Map<String, byte[]> src = bytesOf(in);
            assertThat(Hy3AdapterTest.run(adapter.fromHf(Flux.fromIterable(in)))).containsExactlyInAnyOrderEntriesOf(src);
        }
    }

    /** gate's groups complete, up's missing expert 3: the reference keeps gate's A and drops every complete up group. */
    List<TensorEvent> tornLayer() {
        List<TensorEvent> in = new ArrayList<>(perExpert("model.", 1, DType.BF16, experts(0, E),
                List.of("gate_proj.lora_A", "gate_proj.lora_B", "down_proj.lora_A", "down_proj.lora_B")));
        in.addAll(perExpert("model.", 1, DType.BF16, experts(0, E - 1), List.of("up_proj.lora_A", "up_proj.lora_B")));
        return in;
    }

    @Test
    void aTornLayerIsRefusedNamingTheMissingKeys() {
        assertThatThrownBy(() -> shapesOf(strict.fromHf(Flux.fromIterable(tornLayer()))))
                .isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("2 per-expert LoRA weights are missing")
                .hasMessageContaining("model.layers.1.mlp.experts.3.up_proj.lora_A.weight")
                .hasMessageContaining("model.layers.1.mlp.experts.3.up_proj.lora_B.weight")
                .hasMessageContaining("--lossy-lora");
    }

    @Test
    void lossyLoraConvertsATornLayerAsTheReference() {
        // The mixin: gate A complete -> stacked (up A dropped, complete or not, once gate's is merged);
        // gate B complete but up B short -> gate B passes per expert, then up B (short) passes per expert.
        Map<String, long[]> out = shapesOf(lossy.fromHf(Flux.fromIterable(tornLayer())));
        String g = "model.layers.1.mlp.experts.";
        List<String> expected = new ArrayList<>(List.of(g + "lora_gate_and_up_A", g + "lora_down_A", g + "lora_down_B"));
        experts(0, E).forEach(e -> expected.add(g + e + ".gate_proj.lora_B.weight"));
        experts(0, E - 1).forEach(e -> expected.add(g + e + ".up_proj.lora_B.weight"));
        assertThat(out.keySet()).containsExactlyInAnyOrderElementsOf(expected);
    }

    @Test
    void lossyLoraKeepsTheReferencesOrderDependence() {
        // gate A complete, up A short: when up's group comes first the reference passes it on per expert;
        // when gate's comes first, merging gate's A marks up's group done and it is dropped.
        List<TensorEvent> upFirst = new ArrayList<>(perExpert("model.", 1, DType.BF16, experts(0, E - 1), List.of("up_proj.lora_A")));
        upFirst.addAll(perExpert("model.", 1, DType.BF16, experts(0, E), List.of("gate_proj.lora_A")));
        assertThat(shapesOf(lossy.fromHf(Flux.fromIterable(upFirst))).keySet())
                .contains("model.layers.1.mlp.experts.lora_gate_and_up_A", "model.layers.1.mlp.experts.0.up_proj.lora_A.weight");

        List<TensorEvent> gateFirst = new ArrayList<>(perExpert("model.", 1, DType.BF16, experts(0, E), List.of("gate_proj.lora_A")));
        gateFirst.addAll(perExpert("model.", 1, DType.BF16, experts(0, E - 1), List.of("up_proj.lora_A")));
        assertThat(shapesOf(lossy.fromHf(Flux.fromIterable(gateFirst))).keySet())
                .containsExactly("model.layers.1.mlp.experts.lora_gate_and_up_A");
    }

    @Test
    void anUpProjADifferentFromGatesIsRefusedAndLossyLoraDropsIt() {
        assertThatThrownBy(() -> shapesOf(strict.fromHf(Flux.fromIterable(perExpert("model.", 1, DType.F32, experts(0, E), SIX)))))
                .hasMessageContaining("model.layers.1.mlp.experts.0.up_proj.lora_A.weight differs from its expert's gate_proj.lora_A")
                .hasMessageContaining("and 3 more");

        List<TensorEvent> in = perExpert("model.", 1, DType.F32, experts(0, E), SIX);
        Map<String, byte[]> src = bytesOf(in);
        Map<String, byte[]> out = Hy3AdapterTest.run(lossy.fromHf(Flux.fromIterable(in)));
        assertThat(out).hasSize(4);
        byte[] expert0 = slab(out.get("model.layers.1.mlp.experts.lora_gate_and_up_A"), 0, H * R * 4);
        assertThat(expert0).isEqualTo(transpose(src.get("model.layers.1.mlp.experts.0.gate_proj.lora_A.weight"), DType.F32, R, H));
    }

    /** The fused form of one layer: down's pair outside, gate_and_up's inside {@code base_layer.}. */
    List<TensorEvent> fused(String prefix, int layer) {
        String p = prefix + "layers." + layer + ".mlp.experts.";
        return List.of(t.event(p + "lora_A.weight", DType.BF16, R * E, H),
                t.event(p + "lora_B.weight", DType.BF16, I, R * E),
                t.event(p + "base_layer.lora_A.weight", DType.BF16, R * E, 2 * I),
                t.event(p + "base_layer.lora_B.weight", DType.BF16, H, R * E));
    }

    @Test
    void fusedParamWrapperKeysBecomeTheGroupedTensors() {
        List<TensorEvent> in = fused(PEFT, 2);
        Map<String, byte[]> src = bytesOf(in);
        Map<String, byte[]> out = Hy3AdapterTest.run(strict.fromHf(Flux.fromIterable(in)));
        String p = PEFT + "layers.2.mlp.experts.";
        assertThat(out.get(p + "lora_down_B")).as("a reshape").isEqualTo(src.get(p + "lora_A.weight"));
        assertThat(out.get(p + "lora_gate_and_up_B")).as("a reshape").isEqualTo(src.get(p + "base_layer.lora_A.weight"));
        // [n, r*E] -> reshape [n, r, E] -> permute(2, 0, 1): out[e][i][k] = in[i][k*E + e]
        byte[] b = src.get(p + "lora_B.weight");
        byte[] expected = new byte[b.length];
        int s = 2;
        for (int e = 0; e < E; e++) {
            for (int i = 0; i < I; i++) {
                for (int k = 0; k < R; k++) {
                    System.arraycopy(b, (i * R * E + k * E + e) * s, expected, ((e * I + i) * R + k) * s, s);
                }
            }
        }
        assertThat(out.get(p + "lora_down_A")).isEqualTo(expected);
        assertThat(shapesOf(strict.fromHf(Flux.fromIterable(fused(PEFT, 2)))).get(p + "lora_gate_and_up_A")).containsExactly(E, H, R);
    }

    @Test
    void mixedLayersConvertEachInItsForm() {
        List<TensorEvent> in = new ArrayList<>(shareA(perExpert("model.", 1, DType.BF16, experts(0, E), SIX)));
        in.addAll(fused("model.", 2));
        Map<String, long[]> out = shapesOf(strict.fromHf(Flux.fromIterable(in)));
        for (int layer : new int[] {1, 2}) {
            assertThat(out.get("model.layers." + layer + ".mlp.experts.lora_gate_and_up_B")).containsExactly(E, R, 2 * I);
        }
        assertThat(out).hasSize(8);
    }

    @Test
    void bothFormsInOneLayerAreRefusedAndLossyLoraKeepsTheFusedOne() {
        List<TensorEvent> in = new ArrayList<>(shareA(perExpert("model.", 1, DType.BF16, experts(0, E), SIX)));
        in.addAll(fused("model.", 1));
        assertThatThrownBy(() -> shapesOf(strict.fromHf(Flux.fromIterable(in))))
                .hasMessageContaining("is given twice, by per-expert LoRA keys and by a fused ParamWrapper key");

        List<TensorEvent> fusedFirst = new ArrayList<>(fused("model.", 1));
        Map<String, byte[]> fusedBytes = bytesOf(fusedFirst);
        fusedFirst.addAll(shareA(perExpert("model.", 1, DType.BF16, experts(0, E), SIX)));
        Map<String, byte[]> out = Hy3AdapterTest.run(lossy.fromHf(Flux.fromIterable(fusedFirst)));
        assertThat(out).hasSize(4);
        assertThat(out.get("model.layers.1.mlp.experts.lora_down_B")).isEqualTo(fusedBytes.get("model.layers.1.mlp.experts.lora_A.weight"));
    }

    @Test
    void aFusedTensorNotDivisibleByNumExpertsIsRefused() {
        String name = "model.layers.1.mlp.experts.lora_A.weight";
        assertThatThrownBy(() -> shapesOf(strict.fromHf(Flux.just(t.event(name, DType.BF16, E + 1, H)))))
                .hasMessageContaining(name).hasMessageContaining("not a multiple of num_experts = " + E);
    }

    @Test
    void anExpertIdOutsideNumExpertsIsRefused() {
        List<TensorEvent> in = perExpert("model.", 1, DType.BF16, List.of(E), List.of("down_proj.lora_A"));
        assertThatThrownBy(() -> shapesOf(strict.fromHf(Flux.fromIterable(in))))
                .hasMessageContaining("model.layers.1.mlp.experts." + E + ".down_proj.lora_A.weight names an expert outside [0, " + E + ")");
    }

    // ---- the stage's reactive contract ----

    @Test
    void cancellingMidLayerReleasesWhatTheAccumulatorHolds() {
        List<TensorEvent> in = new ArrayList<>(perExpert("model.", 1, DType.BF16, experts(0, E - 1), SIX));
        in.add(t.event("model.norm.weight", DType.BF16, H));
        in.addAll(perExpert("model.", 2, DType.BF16, experts(0, 1), SIX));
        StepVerifier.create(Flux.fromIterable(in).transform(strict.expertLoraMerge()).doOnNext(TensorEvent::release), 0)
                .thenRequest(1)
                .expectNextMatches(e -> e.fqn().equals("model.norm.weight"))
                .thenCancel()
                .verify();
    }

    @Test
    void aSourceErrorReleasesWhatTheAccumulatorHolds() {
        Flux<TensorEvent> failing = Flux.fromIterable(perExpert("model.", 1, DType.BF16, experts(0, 2), SIX))
                .concatWith(Flux.error(new IllegalStateException("source broke")));
        StepVerifier.create(failing.transform(strict.expertLoraMerge()).doOnNext(TensorEvent::release))
                .expectErrorMessage("source broke")
                .verify();
    }

    @Test
    void aCompleteLayerIsEmittedBeforeTheInputEnds() {
        List<TensorEvent> in = shareA(perExpert("model.", 1, DType.BF16, experts(0, E), SIX));
        StepVerifier.create(Flux.fromIterable(in).concatWith(Flux.never()).transform(strict.expertLoraMerge())
                        .doOnNext(TensorEvent::release))
                .expectNextCount(4)
                .thenCancel()
                .verify();
    }

    @Test
    void keysThatAreNotExpertLoraPassUntouched() {
        List<TensorEvent> in = List.of(t.event("model.layers.1.mlp.experts.0.gate_proj.lora_A.default.weight", DType.BF16, R, H),
                t.event("model.layers.1.mlp.shared_experts.gate_proj.lora_A.weight", DType.BF16, R, H));
        List<String> names = in.stream().map(TensorEvent::fqn).collect(Collectors.toList());
        assertThat(shapesOf(Flux.fromIterable(in).transform(strict.expertLoraMerge())).keySet()).containsExactlyElementsOf(names);
    }
}
