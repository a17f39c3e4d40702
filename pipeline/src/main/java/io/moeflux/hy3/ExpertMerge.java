package io.moeflux.hy3;

import io.moeflux.hy3.Hy3Keys.ExpertKey;
import io.moeflux.hy3.Hy3Keys.Projection;
import io.moeflux.hy3.Hy3Options.ExpertRange;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.StackedTransposeTensor;
import io.moeflux.tensor.Tensor;
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
 * The windowed per-layer expert merge of from-hf.
 *
 * <p>Per-expert {@code gate_proj}/{@code up_proj}/{@code down_proj} keys collect in a window per merged
 * tensor ({@code {prefix}layers.L.mlp.experts.gate_and_up_projs} and {@code ...down_projs}). A window
 * holds only references to the arriving tensors (slices of mapped shards, or buffers a network source
 * filled) and closes the moment its last expert arrives: it then emits one lazy
 * {@link StackedTransposeTensor} that transposes and casts the parts while the sink writes it. So input
 * order is free (layers may interleave, experts may straddle shards), and what a window holds is
 * exactly one open layer's parts. Other keys pass straight through.
 *
 * <p>At the end every layer that had expert keys must have had all of this rank's experts, as the
 * reference's {@code _validate_expert_availability}; the error names the first five missing keys.
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

    ExpertMerge(Hy3Config config, Hy3Options options) {
        this.numExperts = config.numExperts();
        this.inter = config.moeIntermediateSize();
        this.hidden = config.hiddenSize();
        this.range = options.expertRange(numExperts);
        this.targetDtype = options.targetDtype();
        this.epSize = options.epSize();
        this.epRank = options.epRank();
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
                    .concatWith(Mono.defer(state::finish))
                    .doFinally(signal -> state.releaseAll());
        }));
    }

    /** One grouped tensor being assembled: per expert in range, its parts in concatenation order. */
    private final class Window {
        final String mergedName;
        final Projection[] projections;
        final Map<Integer, Tensor[]> experts = new HashMap<>();
        long[] partShape;
        String firstKey;
        int received;

        Window(String mergedName, Projection[] projections) {
            this.mergedName = mergedName;
            this.projections = projections;
        }

        int slot(Projection p) {
            return p == Projection.UP ? 1 : 0;
        }

        boolean complete() {
            return received == range.size() * projections.length;
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
            experts.values().forEach(parts -> {
                for (Tensor t : parts) {
                    if (t != null) {
                        t.release();
                    }
                }
            });
            experts.clear();
        }
    }

    private record Layer(String prefix, String layer) {}

    private final class State {
        private final Map<String, Window> open = new HashMap<>();
        /** Every (prefix, layer) with expert keys, and which grouped tensors of it were emitted. */
        private final Map<Layer, List<String>> layersSeen = new HashMap<>();
        private final UnmergedPrefix unmergedPrefix = new UnmergedPrefix();

        synchronized void onNext(TensorEvent event, SynchronousSink<TensorEvent> sink) {
            var parsed = Hy3Keys.parseExpertKey(event.fqn());
            unmergedPrefix.observe(event.fqn());
            if (parsed.isEmpty()) {
                sink.next(event);
                return;
            }
            ExpertKey key = parsed.get();
            layersSeen.computeIfAbsent(new Layer(key.prefix(), key.layer()), l -> new ArrayList<>());
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
            Tensor tensor = event.tensor();
            long[] shape = tensor.shape();
            if (shape.length != 2) {
                event.release();
                sink.error(new IllegalArgumentException("expert weight " + event.fqn() + " must be 2-D, got "
                        + Shapes.format(shape)));
                return;
            }
            String fact = contradictedFact(key.projection(), shape);
            if (fact != null) {
                event.release();
                sink.error(new IllegalArgumentException("expert weight " + event.fqn() + " has shape " + Shapes.format(shape)
                        + ", but " + fact + " (config.json or the flags): the merged tensor would not convert back"));
                return;
            }
            String mergedName = key.mergedName();
            if (layersSeen.get(new Layer(key.prefix(), key.layer())).contains(mergedName)) {
                event.release();
                sink.error(new IllegalArgumentException("duplicate tensor " + event.fqn() + " (its layer was already merged)"));
                return;
            }
            Window w = open.computeIfAbsent(mergedName, n -> key.projection() == Projection.DOWN
                    ? new Window(n, new Projection[] {Projection.DOWN})
                    : new Window(n, new Projection[] {Projection.GATE, Projection.UP}));
            if (w.partShape == null) {
                w.partShape = shape;
                w.firstKey = event.fqn();
            } else if (!Arrays.equals(w.partShape, shape)) {
                event.release();
                sink.error(new IllegalArgumentException("expert weight " + event.fqn() + " has shape "
                        + Shapes.format(shape) + " but " + w.firstKey + " has " + Shapes.format(w.partShape)));
                return;
            }
            Tensor[] parts = w.experts.computeIfAbsent((int) expert, e -> new Tensor[w.projections.length]);
            int slot = w.slot(key.projection());
            if (parts[slot] != null) {
                event.release();
                sink.error(new IllegalArgumentException("duplicate tensor " + event.fqn()));
                return;
            }
            parts[slot] = tensor;
            w.received++;
            if (w.complete()) {
                open.remove(mergedName);
                layersSeen.get(new Layer(key.prefix(), key.layer())).add(mergedName);
                sink.next(w.merge());
            }
        }

        synchronized Mono<TensorEvent> finish() {
            List<String> missing = new ArrayList<>();
            TreeSet<Integer> layerNumbers = new TreeSet<>();
            List<Layer> layers = new ArrayList<>(layersSeen.keySet());
            layers.sort(Comparator.comparingInt((Layer l) -> parseLayer(l.layer())).thenComparing(Layer::prefix));
            for (Layer layer : layers) {
                layerNumbers.add(parseLayer(layer.layer()));
                Window gateUp = open.get(layer.prefix() + "layers." + layer.layer() + ".mlp.experts.gate_and_up_projs");
                Window down = open.get(layer.prefix() + "layers." + layer.layer() + ".mlp.experts.down_projs");
                List<String> done = layersSeen.get(layer);
                boolean gateUpDone = done.contains(layer.prefix() + "layers." + layer.layer() + ".mlp.experts.gate_and_up_projs");
                boolean downDone = done.contains(layer.prefix() + "layers." + layer.layer() + ".mlp.experts.down_projs");
                for (int e = range.start(); e < range.end(); e++) {
                    for (Projection p : Projection.values()) {
                        boolean isDown = p == Projection.DOWN;
                        if (isDown ? downDone : gateUpDone) {
                            continue;
                        }
                        Window w = isDown ? down : gateUp;
                        Tensor[] parts = w == null ? null : w.experts.get(e);
                        if (parts == null || parts[w.slot(p)] == null) {
                            missing.add(layer.prefix() + "layers." + layer.layer() + ".mlp.experts." + e + "."
                                    + p.keyPart() + ".weight");
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
            open.values().forEach(Window::release);
            open.clear();
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
