package io.moeflux.hy3;

import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.StackedTransposeTensor;
import io.moeflux.tensor.Tensor;
import io.moeflux.tensor.TensorInfo;
import io.moeflux.tensor.TransposedRead;
import io.moeflux.tensor.Tensors;
import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Function;
import java.util.function.Predicate;
import reactor.core.publisher.Flux;
import reactor.core.Exceptions;
import reactor.core.publisher.Mono;
import reactor.core.publisher.Sinks;

/**
 * Converts tencent/Hy3-preview checkpoints between the on-disk HF layout and Automodel's native layout,
 * bit-exact with NeMo Automodel's {@code HYV3StateDictAdapter}, as composable stream stages.
 *
 * <p>from-hf: drop MTP layers, rename, drop {@code _scale_inv} keys, merge experts per layer (and
 * expert-parallel rank), regroup expert LoRA. to-hf: split grouped experts and expert LoRA, rename,
 * exclude keys. Each direction is a
 * {@code Flux<TensorEvent> -> Flux<TensorEvent>} that respects backpressure and releases every tensor
 * it drops.
 */
public final class Hy3Adapter {
    private final Hy3Config config;
    private final Hy3Options options;
    private final ExpertSplit split;

    public Hy3Adapter(Hy3Config config, Hy3Options options) {
        this.config = Objects.requireNonNull(config, "config");
        this.options = Objects.requireNonNull(options, "options");
        this.split = new ExpertSplit(config);
    }

    public Hy3Config config() {
        return config;
    }

    public Hy3Options options() {
        return options;
    }

    /** The MTP filter: drops layers at index {@code >= num_hidden_layers}. */
    public Function<Flux<TensorEvent>, Flux<TensorEvent>> mtpFilter() {
        int n = config.numHiddenLayers();
        return Stages.filter(key -> !Hy3Keys.isMtpKey(key, n));
    }

    /** On-disk names to native names. */
    public Function<Flux<TensorEvent>, Flux<TensorEvent>> renameToNative() {
        return Stages.rename(Hy3Keys::hfToNative);
    }

    /** Native names to on-disk names. */
    public Function<Flux<TensorEvent>, Flux<TensorEvent>> renameToHf() {
        return Stages.rename(Hy3Keys::nativeToHf);
    }

    /** The per-layer expert merge (with this adapter's target dtype and expert range). */
    public Function<Flux<TensorEvent>, Flux<TensorEvent>> expertMerge(MergedOutput output) {
        return new ExpertMerge(config, options, output).stage();
    }

    /** The regrouping of per-expert and fused expert LoRA adapters of from-hf. */
    public Function<Flux<TensorEvent>, Flux<TensorEvent>> expertLoraMerge() {
        return new ExpertLoraMerge(config, options).stage();
    }

    /** The expert split of to-hf (base weights and expert LoRA); other tensors pass through. */
    public Function<Flux<TensorEvent>, Flux<TensorEvent>> expertSplit() {
        return events -> Stages.releaseOnDiscard(events.concatMapIterable(split::split, 1));
    }

    /** Drops keys that {@code --exclude-key-regex} matches at their start; passes all when unset. */
    public Function<Flux<TensorEvent>, Flux<TensorEvent>> keyExclusion() {
        return options.excludeKeyRegex()
                .<Function<Flux<TensorEvent>, Flux<TensorEvent>>>map(p -> Stages.filter(key -> !p.matcher(key).lookingAt()))
                .orElse(Function.identity());
    }

    /** On-disk Hy3 to native, with whole merged tensors. */
    public Flux<TensorEvent> fromHf(Flux<TensorEvent> hf) {
        return fromHf(hf, MergedOutput.WHOLE);
    }

    /** On-disk Hy3 to native; {@code merged} says whether merged tensors go out whole or an expert slab at a time. */
    public Flux<TensorEvent> fromHf(Flux<TensorEvent> hf, MergedOutput merged) {
        return hf.transform(mtpFilter())
                .transform(renameToNative())
                .transform(Stages.filter(key -> !Hy3Keys.isScaleInv(key)))
                .transform(requireAny(key -> Hy3Keys.namesAnExpert(key) || Hy3Keys.parseFusedLora(key).isPresent(),
                        "from-hf: no tensor is a per-expert weight of the on-disk layout (layers.L.mlp.experts.E.gate_proj.weight"
                                + " and so on), so nothing would be converted: is this a native checkpoint (to-hf converts those)?"
                                + " --allow-no-experts converts it anyway"))
                .transform(expertMerge(merged))
                .transform(expertLoraMerge());
    }

    /**
     * from-hf of one part of a checkpoint (a rank's pieces), into slab pieces, for a checkpoint whose tensors
     * were all checked by {@link #layoutFromHf} first (missing experts, no expert at all): nothing here
     * needs the other parts. A gate or up weight whose partner is in another part goes out alone, and the
     * sink that places the pieces refuses what no part covered. Expert LoRA regroups a layer only when one
     * part holds all of it.
     */
    public Flux<TensorEvent> fromHfPart(Flux<TensorEvent> part) {
        return part.transform(mtpFilter())
                .transform(renameToNative())
                .transform(Stages.filter(key -> !Hy3Keys.isScaleInv(key)))
                .transform(new ExpertMerge(config, options, MergedOutput.SLAB_PIECES, true).stage())
                .transform(expertLoraMerge());
    }

    /** to-hf of one part of a checkpoint whose tensors were all checked by {@link #layoutToHf} first. */
    public Flux<TensorEvent> toHfPart(Flux<TensorEvent> part) {
        return part.transform(expertSplit()).transform(renameToHf()).transform(keyExclusion());
    }

    /** Native to on-disk Hy3. */
    public Flux<TensorEvent> toHf(Flux<TensorEvent> nativeEvents) {
        return nativeEvents.transform(toHfInputCheck()).transform(expertSplit()).transform(renameToHf()).transform(keyExclusion());
    }

    /**
     * What to-hf requires of its input, for callers that convert tensor by tensor
     * ({@link #convertSingleTensorToHf}): at least one grouped expert tensor, unless allowed otherwise.
     */
    public Function<Flux<TensorEvent>, Flux<TensorEvent>> toHfInputCheck() {
        return requireAny(key -> Hy3Keys.isGroupedGateUp(key) || Hy3Keys.isGroupedDown(key)
                        || Hy3Keys.parseGroupedLora(key).isPresent(),
                "to-hf: no tensor is a grouped expert tensor of the native layout (layers.L.mlp.experts.gate_and_up_projs,"
                        + " down_projs), so nothing would be converted: is this an on-disk checkpoint (from-hf converts those)?"
                        + " --allow-no-experts converts it anyway");
    }

    /**
     * Passes every event on, and fails at the end when no key was one {@code expected} accepts: a
     * checkpoint of the other layout goes through either direction unchanged, and reporting success for
     * it would hide that nothing was converted. Passes everything with {@code allowNoExperts}.
     */
    private Function<Flux<TensorEvent>, Flux<TensorEvent>> requireAny(Predicate<String> expected, String nothingMatched) {
        if (options.allowNoExperts()) {
            return Function.identity();
        }
        return events -> Flux.defer(() -> {
            AtomicBoolean matched = new AtomicBoolean();
            return events.doOnNext(e -> {
                if (!matched.get() && expected.test(e.fqn())) {
                    matched.set(true);
                }
            }).concatWith(Mono.defer(() -> matched.get() ? Mono.empty() : Mono.error(new IllegalArgumentException(nothingMatched))));
        });
    }

    /**
     * to-hf for one tensor, for save paths that stream tensors one at a time: the same result as
     * {@link #toHf} gives for it. The caller owns the returned tensors.
     */
    public List<TensorEvent> convertSingleTensorToHf(String fqn, Tensor tensor) {
        List<TensorEvent> out = new ArrayList<>();
        var exclude = options.excludeKeyRegex();
        for (TensorEvent e : split.split(new TensorEvent(fqn, tensor))) {
            TensorEvent renamed = e.withFqn(Hy3Keys.nativeToHf(e.fqn()));
            if (exclude.isPresent() && exclude.get().matcher(renamed.fqn()).lookingAt()) {
                renamed.release();
            } else {
                out.add(renamed);
            }
        }
        return out;
    }

    /**
     * The tensors from-hf makes of a checkpoint with these tensors, before any byte moves: what a file
     * sink needs to lay out its headers. Fails as the conversion would (missing experts and so on).
     */
    public List<TensorInfo> planFromHf(List<TensorInfo> hf) {
        return layoutFromHf(hf).planned();
    }

    /** The tensors to-hf makes of a checkpoint with these tensors. */
    public List<TensorInfo> planToHf(List<TensorInfo> nativeInfos) {
        return layoutToHf(nativeInfos).planned();
    }

    /**
     * The inputs from-hf reads transposed (this rank's expert weights), by input name: a source that
     * receives bytes can hold them in column blocks as wide as the tiles that read them
     * ({@link io.moeflux.tensor.ColumnBlockedTensor}), and knows which inputs complete a slab.
     */
    public Map<String, TransposedRead> transposedInputsFromHf(List<TensorInfo> hf) {
        Map<String, TransposedRead> out = new LinkedHashMap<>();
        var range = options.expertRange(config.numExperts());
        for (TensorInfo info : hf) {
            if (Hy3Keys.isMtpKey(info.name(), config.numHiddenLayers()) || info.rank() != 2) {
                continue;
            }
            var key = Hy3Keys.parseExpertKey(Hy3Keys.hfToNative(info.name()));
            if (key.isEmpty() || key.get().expert() < 0 || !range.contains(key.get().expert())) {
                continue;
            }
            int parts = key.get().projection() == Hy3Keys.Projection.DOWN ? 1 : 2;
            int blockCols = StackedTransposeTensor.tileRows(Math.toIntExact(info.dim(1)), Math.toIntExact(info.dim(0) * parts),
                    options.targetDtype());
            out.put(info.name(), new TransposedRead(blockCols, key.get().mergedName() + "#" + key.get().expert(), parts));
        }
        return out;
    }

    /** Plan and pass-through tensors of from-hf, from one run of its stages. Fails as {@link #planFromHf}. */
    public ConversionLayout layoutFromHf(List<TensorInfo> hf) {
        return layout(hf, this::fromHf);
    }

    /** As {@link #layoutFromHf}, for to-hf. */
    public ConversionLayout layoutToHf(List<TensorInfo> nativeInfos) {
        return layout(nativeInfos, this::toHf);
    }

    /**
     * Runs the very same stages over metadata-only tensors, so layouts cannot drift from conversions. The
     * inputs are fed one at a time: a tensor that comes out as the very placeholder that went in, before the
     * next input is fed, was passed on at once, untouched. (A stage that holds a tensor until later ones
     * arrive, as the merges do, passes it on later; a source must not stream such a tensor, whose bytes
     * would wait for tensors that come after them.)
     */
    private static ConversionLayout layout(List<TensorInfo> in, Function<Flux<TensorEvent>, Flux<TensorEvent>> stages) {
        Map<Tensor, Integer> inputIndex = new IdentityHashMap<>();
        List<TensorEvent> events = new ArrayList<>(in.size());
        for (TensorInfo i : in) {
            Tensor placeholder = Tensors.placeholder(i.dtype(), i.shape());
            inputIndex.put(placeholder, events.size());
            events.add(new TensorEvent(i.name(), placeholder));
        }
        List<TensorInfo> planned = new ArrayList<>();
        Map<String, String> passed = new LinkedHashMap<>();
        int[] feeding = {-1};
        AtomicReference<Throwable> failure = new AtomicReference<>();
        Sinks.Many<TensorEvent> input = Sinks.many().unicast().onBackpressureBuffer();
        input.asFlux()
                .transform(stages)
                .subscribe(e -> {
                    planned.add(e.wholeInfo());
                    Integer from = inputIndex.get(e.tensor());
                    if (from != null && from == feeding[0]) {
                        passed.put(in.get(from).name(), e.fqn());
                    }
                }, failure::set);
        for (int i = 0; i < events.size() && failure.get() == null; i++) {
            feeding[0] = i;
            input.tryEmitNext(events.get(i)).orThrow();
        }
        feeding[0] = -1;
        input.tryEmitComplete();
        if (failure.get() != null) {
            throw Exceptions.propagate(failure.get());
        }
        return new ConversionLayout(planned, passed);
    }
}
