package io.moeflux.hy3;

/**
 * The model facts the adapter reads from {@code config.json}.
 *
 * @param numHiddenLayers     layers {@code >=} this index are MTP layers (dropped by from-hf); 80 for Hy3-preview
 * @param numExperts          routed experts per MoE layer; 192 for Hy3-preview
 * @param moeIntermediateSize expert FFN width; 1536 for Hy3-preview
 * @param hiddenSize          model width, checked against the expert weights; 4096 for Hy3-preview, 0 when the
 *                            config does not say
 */
public record Hy3Config(int numHiddenLayers, int numExperts, int moeIntermediateSize, int hiddenSize) {
    public static final Hy3Config HY3_PREVIEW = new Hy3Config(80, 192, 1536, 4096);

    public Hy3Config {
        if (numHiddenLayers < 0 || numExperts <= 0 || moeIntermediateSize <= 0 || hiddenSize < 0) {
            throw new IllegalArgumentException("invalid model config: num_hidden_layers=" + numHiddenLayers
                    + ", num_experts=" + numExperts + ", moe_intermediate_size=" + moeIntermediateSize
                    + ", hidden_size=" + hiddenSize);
        }
    }
}
