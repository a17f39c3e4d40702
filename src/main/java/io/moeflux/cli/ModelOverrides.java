package io.moeflux.cli;

import io.moeflux.connect.safetensors.ModelConfigJson;
import io.moeflux.hy3.Hy3Config;
import io.moeflux.pipeline.CheckpointDescriptor;
import picocli.CommandLine.Option;

/**
 * The model facts the conversion reads from the input's {@code config.json}, each overridable by a flag
 * (for checkpoints without a config, or with one that is wrong). Without either, Hy3-preview's values.
 */
final class ModelOverrides {
    @Option(names = "--num-hidden-layers", paramLabel = "N",
            description = "Layers at index >= N are MTP layers (default: config.json, else 80).")
    Integer numHiddenLayers;

    @Option(names = "--num-experts", paramLabel = "N", description = "Routed experts per MoE layer (default: config.json, else 192).")
    Integer numExperts;

    @Option(names = "--moe-intermediate-size", paramLabel = "N", description = "Expert FFN width (default: config.json, else 1536).")
    Integer moeIntermediateSize;

    @Option(names = "--hidden-size", paramLabel = "N", description = "Model width, checked against the expert weights (default: config.json; 4096 without one; not checked when it omits hidden_size).")
    Integer hiddenSize;

    /** The config the input describes, with the flags applied; {@code where} names the input in errors. */
    Hy3Config resolve(CheckpointDescriptor described, String where) {
        Hy3Config base = described.configJson()
                .map(json -> ModelConfigJson.parse(json, where + "/config.json"))
                .orElse(Hy3Config.HY3_PREVIEW);
        try {
            return new Hy3Config(
                    numHiddenLayers != null ? numHiddenLayers : base.numHiddenLayers(),
                    numExperts != null ? numExperts : base.numExperts(),
                    moeIntermediateSize != null ? moeIntermediateSize : base.moeIntermediateSize(),
                    hiddenSize != null ? hiddenSize : base.hiddenSize());
        } catch (IllegalArgumentException e) {
            throw new BadInputException(e.getMessage());
        }
    }
}
