package io.moeflux.serve;

import io.moeflux.hy3.ConversionLayout;
import io.moeflux.hy3.Hy3Adapter;
import io.moeflux.hy3.MergedOutput;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.TensorInfo;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import reactor.core.publisher.Flux;

/** What the ingest service does to uploaded tensors before they reach the sink. */
public enum Direction {
    /** Native (Automodel) tensors in, on-disk Hy3 out: each tensor converts on its own as it arrives. */
    TO_HF,
    /** On-disk Hy3 tensors in, native out: each expert's weights merge into its slab of the layer's grouped tensors. */
    FROM_HF,
    /** Tensors are stored as uploaded. */
    NONE;

    /** Whether the conversion needs the model config. */
    public boolean needsModelConfig() {
        return this != NONE;
    }

    Flux<TensorEvent> convert(Flux<TensorEvent> events, Hy3Adapter adapter, boolean placesPieces) {
        return switch (this) {
            case TO_HF -> adapter.toHf(events);
            case FROM_HF -> adapter.fromHf(events, placesPieces ? MergedOutput.SLAB_PIECES : MergedOutput.WHOLE);
            case NONE -> events;
        };
    }

    /**
     * The conversion of one part of a checkpoint whose tensors {@link #layout} has checked, for a sink that
     * places pieces (see {@link Hy3Adapter#fromHfPart}); only for checkpoints {@link #convertsInParts}.
     */
    Flux<TensorEvent> convertPart(Flux<TensorEvent> part, Hy3Adapter adapter) {
        return switch (this) {
            case TO_HF -> adapter.toHfPart(part);
            case FROM_HF -> adapter.fromHfPart(part);
            case NONE -> part;
        };
    }

    /**
     * Whether each part of a checkpoint of these tensors converts on its own as all of it would: not when
     * from-hf regroups expert LoRA, which takes a layer's keys together whichever parts they are in.
     */
    boolean convertsInParts(List<TensorInfo> uploaded) {
        return this != FROM_HF || uploaded.stream().noneMatch(t -> t.name().contains(".mlp.experts.") && t.name().contains("lora_"));
    }

    /** What {@link #convert} makes of {@code uploaded}, before any byte moves. */
    ConversionLayout layout(List<TensorInfo> uploaded, Hy3Adapter adapter) {
        return switch (this) {
            case TO_HF -> adapter.layoutToHf(uploaded);
            case FROM_HF -> adapter.layoutFromHf(uploaded);
            case NONE -> unchanged(uploaded);
        };
    }

    /** Every tensor stored as uploaded. */
    static ConversionLayout unchanged(List<TensorInfo> uploaded) {
        Map<String, String> names = new LinkedHashMap<>();
        uploaded.forEach(t -> names.put(t.name(), t.name()));
        return new ConversionLayout(uploaded, names);
    }

    /** Parses the CLI spelling: {@code to-hf}, {@code from-hf}, {@code none}. */
    public static Direction parse(String s) {
        for (Direction d : values()) {
            if (d.cliName().equals(s.trim().toLowerCase(Locale.ROOT))) {
                return d;
            }
        }
        throw new IllegalArgumentException("unknown direction \"" + s + "\": expected to-hf, from-hf or none");
    }

    public String cliName() {
        return name().toLowerCase(Locale.ROOT).replace('_', '-');
    }
}
