package io.moeflux.hy3;

import io.moeflux.hy3.Hy3Keys.ExpertKey;
import io.moeflux.hy3.Hy3Keys.Projection;
import io.moeflux.hy3.Hy3Options.ExpertRange;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.Box;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.StackedTransposeTensor;
import io.moeflux.tensor.Tensor;
import io.moeflux.tensor.TensorInfo;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Function;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.SynchronousSink;

/**
 * The per-layer expert merge of from-hf: a keyed accumulator of per-expert weights.
 *
 * <p>Per-expert {@code gate_proj}/{@code up_proj}/{@code down_proj} weights become
 * {@code {prefix}layers.L.mlp.experts.gate_and_up_projs [n, hidden, 2*inter]} and {@code ...down_projs
 * [n, inter, hidden]}, each expert's slab the transpose of its weights (gate and up side by side). What the
 * accumulator holds are references to the arriving tensors (slices of mapped shards, or buffers a network
 * source filled); the transposition and cast run lazily, in a {@link StackedTransposeTensor}, while the sink
 * writes. Input order is free: layers may interleave, experts may straddle shards. Other keys pass straight
 * through.
 *
 * <ul>
 *   <li>{@link MergedOutput#SLAB_PIECES}: keyed by expert (and by the box of a weight that arrives in
 *       pieces). An expert's slab goes out as a piece of the merged tensor as soon as its weights are in:
 *       down at once, gate once up is in too (and the other way round), so what is held is at most a gate
 *       waiting for its up. A piece of a weight that spans only some of its rows cannot share a slab row
 *       with its partner and goes out alone, as a strided box.</li>
 *   <li>{@link MergedOutput#WHOLE}: keyed by merged tensor. The accumulator holds a layer's weights until its
 *       last expert arrives and emits the whole merged tensor, for sinks that take whole tensors only.</li>
 * </ul>
 *
 * <p>At the end every layer that had expert keys must have had all of this rank's experts, as the
 * reference's {@code _validate_expert_availability}; the error names the first five missing keys. A merge of
 * one part of a checkpoint (slab pieces only) checks nothing at the end, since the other parts hold the rest:
 * a gate (or up) still waiting for its partner goes out alone, and the sink that places the pieces refuses,
 * at its commit, what never arrived.
 */
final class ExpertMerge {
    private final int numExperts;
    private final ExpertRange range;
    private final DType targetDtype;
    private final int epSize;
    private final int epRank;
    private final int inter;
    /** 0 when the model facts do not say. */
    private final int hidden;
    private final MergedOutput output;
    private final boolean onePart;

    /** The merge of a whole checkpoint. */
    ExpertMerge(Hy3Config config, Hy3Options options, MergedOutput output) {
        this(config, options, output, false);
    }

    /** The merge of a whole checkpoint, or, with {@code onePart}, of one part of one (slab pieces only). */
    ExpertMerge(Hy3Config config, Hy3Options options, MergedOutput output, boolean onePart) {
        if (onePart && output != MergedOutput.SLAB_PIECES) {
            throw new IllegalArgumentException("a part of a checkpoint merges into slab pieces only");
        }
        this.onePart = onePart;
        this.numExperts = config.numExperts();
        this.inter = config.moeIntermediateSize();
        this.hidden = config.hiddenSize();
        this.range = options.expertRange(numExperts);
        this.targetDtype = options.targetDtype();
        this.epSize = options.epSize();
        this.epRank = options.epRank();
        this.output = output;
    }

    /**
     * The model fact that a weight of this projection and shape contradicts, or null: gate and up are
     * {@code [moe_intermediate_size, hidden_size]}, down the transpose. Merging one anyway gives a
     * checkpoint whose to-hf split fails (or cuts at the wrong column).
     */
    private String contradictedFact(Projection projection, long[] shape) {
        boolean down = projection == Projection.DOWN;
        long interDim = down ? shape[1] : shape[0];
        long hiddenDim = down ? shape[0] : shape[1];
        if (interDim != inter) {
            return "moe_intermediate_size is " + inter;
        }
        if (hidden > 0 && hiddenDim != hidden) {
            return "hidden_size is " + hidden;
        }
        return null;
    }

    Function<Flux<TensorEvent>, Flux<TensorEvent>> stage() {
        return events -> Stages.releaseOnDiscard(Flux.defer(() -> {
            State state = new State();
            return events.<TensorEvent>handle(state::onNext)
                    .concatWith(Flux.defer(() -> onePart ? Flux.fromIterable(state.unpaired()) : state.finish().flux()))
                    .doFinally(signal -> state.releaseAll());
        }));
    }

    private static int slot(Projection p) {
        return p == Projection.UP ? 1 : 0;
    }

    private static Projection[] projectionsOf(String mergedName) {
        return mergedName.endsWith("down_projs") ? new Projection[] {Projection.DOWN}
                : new Projection[] {Projection.GATE, Projection.UP};
    }

    /** One merged tensor of {@link MergedOutput#WHOLE}: per expert in range, its weights in concatenation order. */
    private final class PendingMerged {
        final String mergedName;
        final int partsPerSlab;
        final Map<Integer, Tensor[]> experts = new HashMap<>();
        int received;

        PendingMerged(String mergedName) {
            this.mergedName = mergedName;
            this.partsPerSlab = projectionsOf(mergedName).length;
        }

        boolean complete() {
            return received == range.size() * partsPerSlab;
        }

        TensorEvent merge() {
            List<List<Tensor>> ordered = new ArrayList<>(range.size());
            for (int e = range.start(); e < range.end(); e++) {
                ordered.add(Arrays.asList(experts.get(e)));
            }
            experts.clear();
            return new TensorEvent(mergedName, new StackedTransposeTensor(ordered, targetDtype));
        }

        void release() {
            experts.values().forEach(ExpertMerge::releaseAll);
            experts.clear();
        }
    }

    /** A gate (or up) weight, or a piece of it spanning all its rows, waiting for its partner under the same box. */
    private record PairKey(String mergedName, long expert, Box box) {}

    /** What arrived of one expert's weight of one projection, in elements: it must end up whole, once. */
    private record PartKey(String mergedName, long expert, Projection projection) {}

    private record Layer(String prefix, String layer) {}

    private final class State {
        private final Map<String, PendingMerged> collecting = new HashMap<>();
        private final Map<PairKey, Tensor[]> pairs = new HashMap<>();
        private final Map<PartKey, Long> covered = new HashMap<>();
        /** The first weight of each merged tensor: every other must have its shape. */
        private final Map<String, TensorInfo> firstWeight = new HashMap<>();
        /** Every (prefix, layer) with expert keys, with the merged tensors it has keys of. */
        private final Map<Layer, Set<String>> layersSeen = new HashMap<>();
        private final UnmergedPrefix unmergedPrefix = new UnmergedPrefix();

        synchronized void onNext(TensorEvent event, SynchronousSink<TensorEvent> sink) {
            var parsed = Hy3Keys.parseExpertKey(event.fqn());
            unmergedPrefix.observe(event.fqn());
            if (parsed.isEmpty()) {
                sink.next(event);
                return;
            }
            ExpertKey key = parsed.get();
            Set<String> mergedOfLayer = layersSeen.computeIfAbsent(new Layer(key.prefix(), key.layer()), l -> new HashSet<>());
            long expert = key.expert();
            if (expert < 0 || expert >= numExperts) {
                event.release();
                sink.error(new IllegalArgumentException("expert " + key.expertDigits() + " in " + event.fqn()
                        + " is outside [0, " + numExperts + "): check num_experts"));
                return;
            }
            if (!range.contains(expert)) {
                event.release();
                return;
            }
            long[] shape = event.wholeShape();
            String problem = shapeProblem(event, key, shape);
            if (problem != null) {
                event.release();
                sink.error(new IllegalArgumentException(problem));
                return;
            }
            String mergedName = key.mergedName();
            mergedOfLayer.add(mergedName);
            PartKey part = new PartKey(mergedName, expert, key.projection());
            long before = covered.getOrDefault(part, 0L);
            if (before + event.box().numel() > Shapes.numel(shape) || (before == Shapes.numel(shape) && event.isWhole())) {
                event.release();
                sink.error(new IllegalArgumentException("duplicate tensor " + event.fqn()
                        + (event.isWhole() ? "" : ": piece " + event.box() + " is more than its weight still lacked")));
                return;
            }
            covered.put(part, before + event.box().numel());
            if (output == MergedOutput.WHOLE) {
                addToWindow(event, key, mergedName, sink);
            } else {
                addToPair(event, key, mergedName, sink);
            }
        }

        /** Why the weight cannot be merged as it is, or null. */
        private String shapeProblem(TensorEvent event, ExpertKey key, long[] shape) {
            if (shape.length != 2) {
                return "expert weight " + event.fqn() + " must be 2-D, got " + Shapes.format(shape);
            }
            String fact = contradictedFact(key.projection(), shape);
            if (fact != null) {
                return "expert weight " + event.fqn() + " has shape " + Shapes.format(shape) + ", but " + fact
                        + " (config.json or the flags): the merged tensor would not convert back";
            }
            TensorInfo first = firstWeight.putIfAbsent(key.mergedName(), event.wholeInfo());
            if (first != null && !Arrays.equals(first.shape(), shape)) {
                return "expert weight " + event.fqn() + " has shape " + Shapes.format(shape) + " but " + first.name()
                        + " has " + Shapes.format(first.shape());
            }
            if (output == MergedOutput.WHOLE && !event.isWhole()) {
                return "expert weight " + event.fqn() + " arrived in pieces (" + event.box() + " of "
                        + Shapes.format(shape) + "), which this destination cannot take: write to a folder";
            }
            return null;
        }

        private void addToWindow(TensorEvent event, ExpertKey key, String mergedName, SynchronousSink<TensorEvent> sink) {
            PendingMerged w = collecting.computeIfAbsent(mergedName, PendingMerged::new);
            w.experts.computeIfAbsent((int) key.expert(), e -> new Tensor[w.partsPerSlab])[slot(key.projection())] = event.tensor();
            w.received++;
            if (w.complete()) {
                collecting.remove(mergedName);
                sink.next(w.merge());
            }
        }

        /**
         * A weight (or a piece of it) of {@code [rows, cols]} lands transposed in its expert's slab of the merged
         * tensor {@code [n, cols, width]}: its rows {@code [r0, r1)} become slab columns (after gate's
         * {@code inter} for up), its columns {@code [c0, c1)} slab rows.
         */
        private void addToPair(TensorEvent event, ExpertKey key, String mergedName, SynchronousSink<TensorEvent> sink) {
            Box box = event.box();
            long[] shape = event.wholeShape();
            int slab = (int) (key.expert() - range.start());
            long[] merged = {range.size(), shape[1], key.projection() == Projection.DOWN ? shape[0] : 2L * shape[0]};
            boolean allRows = box.offset(0) == 0 && box.size(0) == shape[0];
            if (key.projection() == Projection.DOWN || !allRows) {
                long column = box.offset(0) + (key.projection() == Projection.UP ? shape[0] : 0);
                sink.next(TensorEvent.piece(mergedName, merged, new long[] {slab, box.offset(1), column},
                        new StackedTransposeTensor(List.of(List.of(event.tensor())), targetDtype)));
                return;
            }
            PairKey pairKey = new PairKey(mergedName, key.expert(), new Box(new long[] {0, box.offset(1)},
                    new long[] {shape[0], box.size(1)}));
            Tensor[] parts = pairs.computeIfAbsent(pairKey, k -> new Tensor[2]);
            parts[slot(key.projection())] = event.tensor();
            if (parts[0] != null && parts[1] != null) {
                pairs.remove(pairKey);
                sink.next(TensorEvent.piece(mergedName, merged, new long[] {slab, box.offset(1), 0},
                        new StackedTransposeTensor(List.of(Arrays.asList(parts)), targetDtype)));
            }
        }

        /** Gate and up weights whose partners never came, each alone in its columns of its slab; taken out. */
        synchronized List<TensorEvent> unpaired() {
            List<TensorEvent> out = new ArrayList<>();
            for (Map.Entry<PairKey, Tensor[]> pending : pairs.entrySet()) {
                PairKey key = pending.getKey();
                int which = pending.getValue()[0] != null ? 0 : 1;
                long[] weight = firstWeight.get(key.mergedName()).shape();
                long[] merged = {range.size(), weight[1], 2L * weight[0]};
                long column = which == slot(Projection.UP) ? weight[0] : 0;
                out.add(TensorEvent.piece(key.mergedName(), merged,
                        new long[] {key.expert() - range.start(), key.box().offset(1), column},
                        new StackedTransposeTensor(List.of(List.of(pending.getValue()[which])), targetDtype)));
            }
            pairs.clear();
            return out;
        }

        synchronized Mono<TensorEvent> finish() {
            List<String> missing = new ArrayList<>();
            TreeSet<Integer> layerNumbers = new TreeSet<>();
            List<Layer> layers = new ArrayList<>(layersSeen.keySet());
            layers.sort(Comparator.comparingInt((Layer l) -> parseLayer(l.layer())).thenComparing(Layer::prefix));
            for (Layer layer : layers) {
                layerNumbers.add(parseLayer(layer.layer()));
                String experts = layer.prefix() + "layers." + layer.layer() + ".mlp.experts.";
                for (int e = range.start(); e < range.end(); e++) {
                    for (Projection p : Projection.values()) {
                        String mergedName = experts + (p == Projection.DOWN ? "down_projs" : "gate_and_up_projs");
                        TensorInfo weight = firstWeight.get(mergedName);
                        long have = covered.getOrDefault(new PartKey(mergedName, e, p), 0L);
                        if (weight == null || have < Shapes.numel(weight.shape())) {
                            missing.add(experts + e + "." + p.keyPart() + ".weight");
                        }
                    }
                }
            }
            layerNumbers.addAll(unmergedPrefix.layers);
            missing.addAll(unmergedPrefix.missing());
            if (missing.isEmpty()) {
                return Mono.empty();
            }
            long total = (long) range.size() * layerNumbers.size() * Projection.values().length;
            String rankInfo = epSize > 1 ? " (rank " + epRank + " of " + epSize + ")" : "";
            List<String> first = missing.subList(0, Math.min(5, missing.size()));
            String message = "Expert weights missing from checkpoint" + rankInfo + ": " + missing.size() + "/" + total
                    + " required weights not found. Layers with experts: " + layerNumbers
                    + ", required experts: [" + range.start() + ", " + range.end() + "). First missing keys: "
                    + Hy3Keys.firstFive(missing);
            return Mono.error(new MissingExpertsException(message, missing.size(), first));
        }

        synchronized void releaseAll() {
            collecting.values().forEach(PendingMerged::release);
            collecting.clear();
            pairs.values().forEach(ExpertMerge::releaseAll);
            pairs.clear();
        }
    }

    private static void releaseAll(Tensor[] tensors) {
        for (Tensor t : tensors) {
            if (t != null) {
                t.release();
            }
        }
    }

    /**
     * Base expert weights under a prefix the merge does not take ({@code base_model.model.model.}, say)
     * pass on per expert, but the reference's completeness check still covers them when the first key
     * that names an expert path has that prefix: it learns the prefix (what comes before that key's first
     * {@code layers.}) and checks every layer with base expert keys under it, as the others.
     */
    private final class UnmergedPrefix {
        private static final List<String> MERGED_PREFIXES = List.of("", "model.", "language_model.", "model.language_model.");
        private String prefix;
        private Pattern keys;
        private boolean learned;
        final TreeSet<Integer> layers = new TreeSet<>();
        final Set<String> present = new HashSet<>();

        void observe(String key) {
            if (!learned && key.contains(".mlp.experts.") && key.contains("layers.")) {
                learned = true;
                String learnedPrefix = key.substring(0, key.indexOf("layers."));
                if (!MERGED_PREFIXES.contains(learnedPrefix)) {
                    prefix = learnedPrefix;
                    keys = Pattern.compile(Pattern.quote(prefix) + "layers\\.(\\d+)\\.mlp\\.experts\\.\\d+\\.(?:gate_proj|up_proj|down_proj)\\.weight");
                }
            }
            if (keys == null) {
                return;
            }
            Matcher m = keys.matcher(key);
            if (m.lookingAt()) {
                layers.add(parseLayer(m.group(1)));
                present.add(key);
            }
        }

        List<String> missing() {
            List<String> missing = new ArrayList<>();
            if (keys == null) {
                return missing;
            }
            for (int layer : layers) {
                for (int e = range.start(); e < range.end(); e++) {
                    for (Projection p : Projection.values()) {
                        String expected = prefix + "layers." + layer + ".mlp.experts." + e + "." + p.keyPart() + ".weight";
                        if (!present.contains(expected)) {
                            missing.add(expected);
                        }
                    }
                }
            }
            return missing;
        }
    }

    private static int parseLayer(String digits) {
        return digits.length() > 9 ? Integer.MAX_VALUE : Integer.parseInt(digits);
    }
}
