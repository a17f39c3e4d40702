package io.moeflux.testing;

import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import java.util.ArrayList;
import java.util.List;

/** Small on-disk Hy3 checkpoints as event lists: layer 0 dense, the others MoE, plus one MTP layer. */
public final class SyntheticHy3 {
    private SyntheticHy3() {}

    /**
     * @param layers num_hidden_layers; layer {@code layers} is emitted as the MTP layer
     */
    public static List<TensorEvent> hf(TrackedTensors t, int layers, int experts, int hidden, int inter, DType expertType) {
        List<TensorEvent> out = new ArrayList<>();
        out.add(t.event("model.embed_tokens.weight", DType.BF16, 16, hidden));
        for (int l = 0; l <= layers; l++) {
            String p = "model.layers." + l + ".";
            out.add(t.event(p + "input_layernorm.weight", DType.BF16, hidden));
            out.add(t.event(p + "self_attn.q_proj.weight", DType.BF16, hidden, hidden));
            if (l == 0) {
                out.add(t.event(p + "mlp.gate_proj.weight", DType.BF16, 2 * hidden, hidden));
                out.add(t.event(p + "mlp.down_proj.weight", DType.BF16, hidden, 2 * hidden));
                continue;
            }
            out.add(t.event(p + "mlp.router.gate.weight", DType.F32, experts, hidden));
            out.add(t.event(p + "mlp.expert_bias", DType.F32, experts));
            for (int e = 0; e < experts; e++) {
                out.add(t.event(p + "mlp.experts." + e + ".gate_proj.weight", expertType, inter, hidden));
                out.add(t.event(p + "mlp.experts." + e + ".up_proj.weight", expertType, inter, hidden));
                out.add(t.event(p + "mlp.experts." + e + ".down_proj.weight", expertType, hidden, inter));
            }
            out.add(t.event(p + "mlp.shared_mlp.gate_proj.weight", DType.BF16, inter, hidden));
            out.add(t.event(p + "mlp.shared_mlp.down_proj.weight", DType.BF16, hidden, inter));
            if (l == layers) {
                out.add(t.event(p + "eh_proj.weight", DType.BF16, hidden, 2 * hidden));
                out.add(t.event(p + "enorm.weight", DType.BF16, hidden));
            }
        }
        out.add(t.event("model.norm.weight", DType.BF16, hidden));
        out.add(t.event("lm_head.weight", DType.BF16, 16, hidden));
        return out;
    }
}
