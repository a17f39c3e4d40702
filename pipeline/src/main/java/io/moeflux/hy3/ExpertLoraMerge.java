package io.moeflux.hy3;

import io.moeflux.hy3.Hy3Keys.FusedLoraKey;
import io.moeflux.hy3.Hy3Keys.GroupedLora;
import io.moeflux.hy3.Hy3Keys.LoraExpertKey;
import io.moeflux.hy3.Hy3Keys.LoraLayer;
import io.moeflux.hy3.Hy3Keys.LoraMatrix;
import io.moeflux.hy3.Hy3Keys.Projection;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.ReshapedTensor;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.StackedTransposeTensor;
import io.moeflux.tensor.Tensor;
import io.moeflux.tensor.Tensors;
import io.moeflux.tensor.TransposedSliceTensor;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.function.Function;
import reactor.core.publisher.Flux;

/**
 * The from-hf regrouping of expert LoRA adapters, as the mixin's {@code _recombine_lora_expert_keys} and
 * {@code _convert_paramwrapper_to_native} do it, but refusing by default where they drop tensors.
 *
 * <p>Per-expert keys {@code P layers.L.mlp.experts.e.{gate,up,down}_proj.lora_{A,B}.weight} collect in a
 * keyed accumulator per (prefix, layer), six groups of one entry per expert. Once all six groups of a
 * layer hold every expert, the layer is emitted at once as four lazy grouped tensors ({@code
 * lora_gate_and_up_A = stack(gate.A^T)}, {@code lora_gate_and_up_B = stack(concat(gate.B^T, up.B^T))},
 * {@code lora_down_A = stack(down.A^T)}, {@code lora_down_B = stack(down.B^T)}), so what is held is the
 * open layers' references only. A layer that is still open when the input ends is a partial adapter: its
 * keys pass on under their own names when all six groups cover the same experts, and it is refused
 * otherwise (the reference would drop its complete up_proj groups). An up_proj A that differs from its
 * expert's gate_proj A is refused too: the native layout has one A for both. Fused ParamWrapper keys are
 * reshaped (and their experts moved to the front) as they arrive. Nothing is cast; EP does not apply.
 *
 * <p>With {@link Hy3Options#lossyLora()} every layer waits for the end of the input instead, and is then
 * converted exactly as the reference does, in the order its groups first appeared, dropping what the
 * reference drops; a fused key then wins over the per-expert keys of its layer.
 */
final class ExpertLoraMerge {
    private static final List<Group> GROUPS = List.of(
            new Group(Projection.GATE, LoraMatrix.A), new Group(Projection.GATE, LoraMatrix.B),
            new Group(Projection.UP, LoraMatrix.A), new Group(Projection.UP, LoraMatrix.B),
            new Group(Projection.DOWN, LoraMatrix.A), new Group(Projection.DOWN, LoraMatrix.B));
    private static final Group GATE_A = GROUPS.get(0), GATE_B = GROUPS.get(1), UP_A = GROUPS.get(2), UP_B = GROUPS.get(3),
            DOWN_A = GROUPS.get(4), DOWN_B = GROUPS.get(5);
    private static final String LOSSY_HINT = "--lossy-lora converts as the reference does, dropping them";

    private final int numExperts;
    private final boolean lossy;

    ExpertLoraMerge(Hy3Config config, Hy3Options options) {
        this.numExperts = config.numExperts();
        this.lossy = options.lossyLora();
    }

    Function<Flux<TensorEvent>, Flux<TensorEvent>> stage() {
        return events -> Stages.releaseOnDiscard(Flux.defer(() -> {
            Accumulator accumulator = new Accumulator();
            return events.concatMapIterable(accumulator::onNext, 1)
                    .concatWith(Flux.defer(() -> Flux.fromIterable(accumulator.finish())))
                    .doFinally(signal -> accumulator.releaseAll());
        }));
    }

    /** One of a layer's six per-expert LoRA groups. */
    private record Group(Projection projection, LoraMatrix matrix) {
        @Override
        public String toString() {
            return projection.keyPart() + ".lora_" + matrix;
        }
    }

    /** One (prefix, layer)'s per-expert LoRA so far: per group, in the order groups first came, expert to event. */
    private final class LayerLora {
        final LoraLayer layer;
        final Map<Group, TreeMap<Long, TensorEvent>> groups = new LinkedHashMap<>();

        LayerLora(LoraLayer layer) {
            this.layer = layer;
        }

        boolean complete() {
            return groups.size() == GROUPS.size() && groups.values().stream().allMatch(g -> g.size() == numExperts);
        }

        TreeMap<Long, TensorEvent> group(Group g) {
            return groups.getOrDefault(g, new TreeMap<>());
        }

        /** The group's tensors in ascending expert order, taken out of the accumulator. */
        List<Tensor> take(Group g) {
            TreeMap<Long, TensorEvent> experts = groups.get(g);
            List<Tensor> out = experts.values().stream().map(TensorEvent::tensor).toList();
            experts.clear();
            return out;
        }

        /** The group's entries under their per-expert names, taken out of the accumulator. */
        List<TensorEvent> passOn(Group g) {
            List<TensorEvent> out = new ArrayList<>();
            group(g).forEach((e, event) -> out.add(event.withFqn(layer.perExpert(e, g.projection(), g.matrix()))));
            group(g).clear();
            return out;
        }

        void release() {
            groups.values().forEach(experts -> experts.values().forEach(TensorEvent::release));
            groups.clear();
        }
    }

    private final class Accumulator {
        private final Map<LoraLayer, LayerLora> open = new LinkedHashMap<>();
        private final Set<LoraLayer> merged = new HashSet<>();
        /** Native names made from fused keys, and from per-expert groups: one may not stand for the other. */
        private final Set<String> fusedNames = new HashSet<>();
        private final Set<String> mergedNames = new HashSet<>();

        synchronized List<TensorEvent> onNext(TensorEvent event) {
            String fqn = event.fqn();
            var fused = Hy3Keys.parseFusedLora(fqn);
            if (fused.isPresent()) {
                return List.of(fromFused(event, fused.get()));
            }
            var parsed = Hy3Keys.parseLoraExpertKey(fqn);
            if (parsed.isEmpty()) {
                return List.of(event);
            }
            LoraExpertKey key = parsed.get();
            Group group = new Group(key.projection(), key.matrix());
            if (key.expert() < 0 || key.expert() >= numExperts) {
                throw refuse(event, "expert LoRA tensor " + fqn + " names an expert outside [0, " + numExperts + "): check num_experts");
            }
            if (merged.contains(key.layer())) {
                throw refuse(event, "duplicate tensor " + fqn + " (its layer's expert LoRA was already merged)");
            }
            LayerLora layer = open.computeIfAbsent(key.layer(), LayerLora::new);
            TreeMap<Long, TensorEvent> experts = layer.groups.computeIfAbsent(group, g -> new TreeMap<>());
            TensorEvent earlier = experts.get(key.expert());
            if (earlier != null) {
                throw refuse(event, "duplicate tensor " + fqn + ": " + earlier.fqn() + " is the same expert's " + group);
            }
            long[] shape = event.tensor().shape();
            if (shape.length != 2) {
                throw refuse(event, "expert LoRA tensor " + fqn + " must be 2-D, got " + Shapes.format(shape));
            }
            if (!experts.isEmpty()) {
                TensorEvent first = experts.firstEntry().getValue();
                if (!Arrays.equals(first.tensor().shape(), shape) || first.tensor().dtype() != event.tensor().dtype()) {
                    throw refuse(event, "expert LoRA tensor " + fqn + " is " + event.tensor().dtype() + Shapes.format(shape)
                            + " but " + first.fqn() + " is " + first.tensor().dtype() + Shapes.format(first.tensor().shape())
                            + ": one group's experts must agree to be stacked");
                }
            }
            experts.put(key.expert(), event);
            if (lossy || !layer.complete()) {
                return List.of();
            }
            open.remove(key.layer());
            merged.add(key.layer());
            try {
                requireSharedA(layer);
                List<TensorEvent> out = new ArrayList<>(4);
                out.add(stackA(layer));
                layer.take(UP_A).forEach(Tensor::release);
                out.add(stackB(layer));
                out.add(stack(layer, DOWN_A, GroupedLora.DOWN_A));
                out.add(stack(layer, DOWN_B, GroupedLora.DOWN_B));
                for (TensorEvent e : out) {
                    if (fusedNames.contains(e.fqn())) {
                        out.forEach(TensorEvent::release);
                        throw bothForms(e.fqn());
                    }
                    mergedNames.add(e.fqn());
                }
                return out;
            } finally {
                layer.release();
            }
        }

        /**
         * A fused ParamWrapper tensor as its grouped native tensor: {@code [r*E, n] -> [E, r, n]} is a
         * reshape; {@code [n, r*E] -> [n, r, E] -> permute(2, 0, 1)} is the transpose of its bytes seen
         * as {@code [n*r, E]}, then a reshape to {@code [E, n, r]}.
         */
        private TensorEvent fromFused(TensorEvent event, FusedLoraKey key) {
            Tensor t = event.tensor();
            long[] shape = t.shape();
            if (shape.length != 2) {
                throw refuse(event, "fused expert LoRA tensor " + event.fqn() + " must be 2-D, got " + Shapes.format(shape));
            }
            boolean expertsLast = key.kind().expertsInLastDim();
            long folded = expertsLast ? shape[1] : shape[0];
            if (folded % numExperts != 0) {
                throw refuse(event, "fused expert LoRA tensor " + event.fqn() + " has shape " + Shapes.format(shape) + ": "
                        + folded + " is not a multiple of num_experts = " + numExperts);
            }
            long rank = folded / numExperts;
            String name = key.layer().grouped(key.kind().target());
            if (!lossy && mergedNames.contains(name)) {
                throw refuse(event, bothForms(name).getMessage());
            }
            fusedNames.add(name);
            if (!expertsLast) {
                return new TensorEvent(name, new ReshapedTensor(t, new long[] {numExperts, rank, shape[1]}));
            }
            ReshapedTensor rowsByExpert = new ReshapedTensor(t, new long[] {1, shape[0] * rank, numExperts});
            Tensor expertsByRows = new TransposedSliceTensor(rowsByExpert, rowsByExpert::release, 0, 0, numExperts);
            return new TensorEvent(name, new ReshapedTensor(expertsByRows, new long[] {numExperts, shape[0], rank}));
        }

        synchronized List<TensorEvent> finish() {
            List<TensorEvent> out = new ArrayList<>();
            List<String> missing = new ArrayList<>();
            for (LayerLora layer : open.values()) {
                if (lossy) {
                    out.addAll(asTheReferenceDoes(layer));
                } else {
                    missing.addAll(missingKeys(layer));
                }
            }
            if (!missing.isEmpty()) {
                throw new IllegalArgumentException("expert LoRA is torn: " + missing.size() + " per-expert LoRA weights are missing "
                        + "from layers whose other LoRA groups have them: " + Hy3Keys.firstFive(missing)
                        + "; the reference would drop the complete groups (" + LOSSY_HINT + ")");
            }
            if (!lossy) {
                for (LayerLora layer : open.values()) {
                    GROUPS.forEach(g -> out.addAll(layer.passOn(g)));
                }
            }
            open.clear();
            return out;
        }

        /** A partial layer passes on only if its six groups cover the same experts: the keys each group lacks. */
        private List<String> missingKeys(LayerLora layer) {
            Set<Long> covered = new TreeSet<>();
            layer.groups.values().forEach(g -> covered.addAll(g.keySet()));
            List<String> missing = new ArrayList<>();
            for (long e : covered) {
                for (Group g : GROUPS) {
                    if (!layer.group(g).containsKey(e)) {
                        missing.add(layer.layer.perExpert(e, g.projection(), g.matrix()));
                    }
                }
            }
            return missing;
        }

        /**
         * The mixin's loop over one layer's groups, in the order they first appeared: a group short of
         * experts passes on per expert; up_proj's A is never used (and its group is skipped once gate's A
         * is merged); up_proj's B goes only into gate's, which passes on per expert when up's is short.
         */
        private List<TensorEvent> asTheReferenceDoes(LayerLora layer) {
            List<TensorEvent> out = new ArrayList<>();
            Set<Group> processed = new HashSet<>();
            for (Group g : List.copyOf(layer.groups.keySet())) {
                if (!processed.add(g)) {
                    continue;
                }
                if (layer.group(g).size() != numExperts) {
                    out.addAll(layer.passOn(g));
                } else if (g.equals(GATE_A)) {
                    out.add(stackA(layer));
                    processed.add(UP_A);
                } else if (g.equals(GATE_B)) {
                    if (layer.group(UP_B).size() != numExperts) {
                        out.addAll(layer.passOn(g));
                    } else {
                        out.add(stackB(layer));
                        processed.add(UP_B);
                    }
                } else if (g.equals(DOWN_A)) {
                    out.add(stack(layer, DOWN_A, GroupedLora.DOWN_A));
                } else if (g.equals(DOWN_B)) {
                    out.add(stack(layer, DOWN_B, GroupedLora.DOWN_B));
                }
            }
            layer.release();
            List<TensorEvent> kept = new ArrayList<>(out.size());
            for (TensorEvent e : out) {
                if (fusedNames.contains(e.fqn())) {
                    e.release();
                } else {
                    kept.add(e);
                }
            }
            return kept;
        }

        /** gate_proj's and up_proj's A must be one matrix per expert: the native layout keeps one. */
        private void requireSharedA(LayerLora layer) {
            List<String> differing = new ArrayList<>();
            TreeMap<Long, TensorEvent> gate = layer.group(GATE_A);
            TreeMap<Long, TensorEvent> up = layer.group(UP_A);
            for (var entry : gate.entrySet()) {
                Tensor g = entry.getValue().tensor();
                Tensor u = up.get(entry.getKey()).tensor();
                if (!Tensors.hasBytes(g) || !Tensors.hasBytes(u)) {
                    continue;
                }
                try {
                    if (g.dtype() != u.dtype() || !Arrays.equals(g.shape(), u.shape()) || !Tensors.sameBytes(g, u)) {
                        differing.add(up.get(entry.getKey()).fqn());
                    }
                } catch (IOException e) {
                    throw new UncheckedIOException("cannot read " + up.get(entry.getKey()).fqn() + ": " + e.getMessage(), e);
                }
            }
            if (!differing.isEmpty()) {
                throw new IllegalArgumentException(differing.getFirst() + " differs from its expert's gate_proj.lora_A"
                        + (differing.size() > 1 ? " (and " + (differing.size() - 1) + " more experts' up_proj.lora_A)" : "")
                        + ": the native layout keeps one A for gate_proj and up_proj; " + LOSSY_HINT);
            }
        }

        private TensorEvent stackA(LayerLora layer) {
            return stack(layer, GATE_A, GroupedLora.GATE_AND_UP_A);
        }

        /** Per expert concat(gate.B^T, up.B^T): both must be {@code [inter, r]} of one type. */
        private TensorEvent stackB(LayerLora layer) {
            TensorEvent gate = layer.group(GATE_B).firstEntry().getValue();
            TensorEvent up = layer.group(UP_B).firstEntry().getValue();
            if (gate.tensor().dtype() != up.tensor().dtype() || gate.tensor().shape()[1] != up.tensor().shape()[1]) {
                throw new IllegalArgumentException(up.fqn() + " is " + up.tensor().dtype() + Shapes.format(up.tensor().shape())
                        + " but " + gate.fqn() + " is " + gate.tensor().dtype() + Shapes.format(gate.tensor().shape())
                        + ": their transposes are concatenated into lora_gate_and_up_B");
            }
            List<Tensor> gates = layer.take(GATE_B);
            List<Tensor> ups = layer.take(UP_B);
            List<List<Tensor>> parts = new ArrayList<>(gates.size());
            for (int e = 0; e < gates.size(); e++) {
                parts.add(List.of(gates.get(e), ups.get(e)));
            }
            return stacked(layer.layer.grouped(GroupedLora.GATE_AND_UP_B), parts);
        }

        private TensorEvent stack(LayerLora layer, Group g, GroupedLora kind) {
            return stacked(layer.layer.grouped(kind), layer.take(g).stream().map(List::of).toList());
        }

        private TensorEvent stacked(String name, List<List<Tensor>> parts) {
            return new TensorEvent(name, new StackedTransposeTensor(parts, parts.getFirst().getFirst().dtype()));
        }

        private IllegalArgumentException bothForms(String name) {
            return new IllegalArgumentException(name + " is given twice, by per-expert LoRA keys and by a fused ParamWrapper key "
                    + "of the same layer; keep one form (--lossy-lora keeps the fused one, as the reference does)");
        }

        private IllegalArgumentException refuse(TensorEvent event, String message) {
            event.release();
            return new IllegalArgumentException(message);
        }

        synchronized void releaseAll() {
            open.values().forEach(LayerLora::release);
            open.clear();
        }
    }
}
