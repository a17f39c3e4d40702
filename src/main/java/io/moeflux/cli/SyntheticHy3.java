package io.moeflux.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.TensorInfo;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Stream;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * A synthetic checkpoint in the on-disk layout of tencent/Hy3-preview, with pseudo-random weights.
 *
 * <p>Layer 0 is dense; layers {@code 1 .. layers-1} are MoE (router gate and expert bias in F32, routed
 * experts, a shared expert); after them come {@code mtpLayers} MTP layers, which are MoE layers plus
 * {@code eh_proj}, {@code enorm}, {@code hnorm} and {@code final_layernorm}, numbered from
 * {@code layers} on as the real checkpoint stores its MTP layer as layer 80. Attention has q/k/v/o
 * projections and per-head q/k norms. The key structure is that of the real checkpoint (and of the
 * reference vector {@code hy3-tiny}): with 80 layers, one MTP layer and 192 experts it has 47,138 tensors.
 *
 * <p>The tensors are {@link RandomTensor}s: nothing is held in memory, bytes are made as they are written.
 */
final class SyntheticHy3 implements CheckpointSource {
    /**
     * The sizes of a synthetic checkpoint.
     *
     * @param layers     {@code num_hidden_layers}: layer 0 dense, the rest MoE
     * @param mtpLayers  MTP layers after them (Hy3-preview has one); from-hf drops them
     * @param experts    routed experts per MoE layer
     * @param hidden     model width
     * @param moeInter   expert (and shared expert) FFN width
     * @param denseInter FFN width of the dense layer 0
     * @param vocab      vocabulary (rows of {@code embed_tokens} and {@code lm_head})
     * @param dtype      type of every tensor except the router gate and expert bias (always F32, as on disk)
     * @param seed       seeds the pseudo-random bytes; the same spec and seed give the same bytes
     */
    record Spec(int layers, int mtpLayers, int experts, int hidden, int moeInter, int denseInter, int vocab,
            DType dtype, long seed) {
        Spec {
            if (layers < 1 || mtpLayers < 0 || experts < 1 || hidden < 1 || moeInter < 1 || denseInter < 1 || vocab < 1) {
                throw new IllegalArgumentException("synthetic checkpoint sizes must be positive (mtp layers may be 0): "
                        + "layers=" + layers + " mtp-layers=" + mtpLayers + " experts=" + experts + " hidden=" + hidden
                        + " moe-inter=" + moeInter + " dense-inter=" + denseInter + " vocab=" + vocab);
            }
        }

        /** Attention head size: 128 as Hy3 for real widths, a quarter of the width for toy ones. */
        int headDim() {
            return hidden >= 1024 ? 128 : Math.max(1, hidden / 4);
        }

        int heads() {
            return Math.max(1, hidden / headDim());
        }

        int kvHeads() {
            return Math.max(1, heads() / 2);
        }
    }

    /** The named starting points of {@code generate --preset}. */
    enum Preset {
        /** The shape of the {@code hy3-tiny} reference vector: 3 layers + MTP, 8 experts, 129 tensors, 136 KB. */
        TINY(new Spec(3, 1, 8, 32, 16, 64, 64, DType.BF16, 0)),
        /** The real key structure (80 layers, MTP layer 80, 192 experts: 47,138 tensors) at toy widths. */
        HY3_KEYS(new Spec(80, 1, 192, 32, 16, 64, 64, DType.BF16, 0)),
        /**
         * Real Hy3 expert shapes (hidden 4096, expert FFN 1536: 37.7 MB per expert) in one MoE layer of
         * 32 experts, 1.55 GB in all; {@code --experts 64} puts 2.4 GB of experts into that layer.
         */
        HY3_BENCH(new Spec(2, 0, 32, 4096, 1536, 1536, 4096, DType.BF16, 0));

        final Spec spec;

        Preset(Spec spec) {
            this.spec = spec;
        }

        /** The CLI spelling, {@code hy3-keys}. */
        String cliName() {
            return name().toLowerCase(Locale.ROOT).replace('_', '-');
        }

        static Preset parse(String cliName) {
            for (Preset p : values()) {
                if (p.cliName().equals(cliName)) {
                    return p;
                }
            }
            throw new IllegalArgumentException("unknown preset \"" + cliName + "\"; expected one of "
                    + String.join(", ", Stream.of(values()).map(Preset::cliName).toList()));
        }
    }

    private final Spec spec;
    /** Every tensor, in the order the reference checkpoint's index lists them (by layer). */
    private final List<TensorInfo> infos;

    SyntheticHy3(Spec spec) {
        this.spec = spec;
        this.infos = List.copyOf(layout(spec));
    }

    @Override
    public Mono<CheckpointDescriptor> describe() {
        return Mono.fromSupplier(() -> new CheckpointDescriptor(Optional.of(infos), Optional.of(configJson(spec))));
    }

    @Override
    public Flux<TensorEvent> tensors() {
        return Stages.releaseOnDiscard(Flux.fromIterable(infos)
                .map(i -> new TensorEvent(i.name(), new RandomTensor(i.dtype(), i.shape(), spec.seed(), i.name()))));
    }

    private static List<TensorInfo> layout(Spec s) {
        List<TensorInfo> out = new ArrayList<>();
        DType t = s.dtype();
        long h = s.hidden();
        out.add(new TensorInfo("model.embed_tokens.weight", t, new long[] {s.vocab(), h}));
        for (int layer = 0; layer < s.layers() + s.mtpLayers(); layer++) {
            String p = "model.layers." + layer + ".";
            out.add(new TensorInfo(p + "input_layernorm.weight", t, new long[] {h}));
            out.add(new TensorInfo(p + "post_attention_layernorm.weight", t, new long[] {h}));
            long q = (long) s.heads() * s.headDim();
            long kv = (long) s.kvHeads() * s.headDim();
            out.add(new TensorInfo(p + "self_attn.q_proj.weight", t, new long[] {q, h}));
            out.add(new TensorInfo(p + "self_attn.k_proj.weight", t, new long[] {kv, h}));
            out.add(new TensorInfo(p + "self_attn.v_proj.weight", t, new long[] {kv, h}));
            out.add(new TensorInfo(p + "self_attn.o_proj.weight", t, new long[] {h, q}));
            out.add(new TensorInfo(p + "self_attn.q_norm.weight", t, new long[] {s.headDim()}));
            out.add(new TensorInfo(p + "self_attn.k_norm.weight", t, new long[] {s.headDim()}));
            if (layer == 0) {
                addFfn(out, p + "mlp.", t, h, s.denseInter());
                continue;
            }
            out.add(new TensorInfo(p + "mlp.router.gate.weight", DType.F32, new long[] {s.experts(), h}));
            out.add(new TensorInfo(p + "mlp.expert_bias", DType.F32, new long[] {s.experts()}));
            for (int e = 0; e < s.experts(); e++) {
                addFfn(out, p + "mlp.experts." + e + ".", t, h, s.moeInter());
            }
            addFfn(out, p + "mlp.shared_mlp.", t, h, s.moeInter());
            if (layer >= s.layers()) {
                out.add(new TensorInfo(p + "eh_proj.weight", t, new long[] {h, 2 * h}));
                out.add(new TensorInfo(p + "enorm.weight", t, new long[] {h}));
                out.add(new TensorInfo(p + "hnorm.weight", t, new long[] {h}));
                out.add(new TensorInfo(p + "final_layernorm.weight", t, new long[] {h}));
            }
        }
        out.add(new TensorInfo("model.norm.weight", t, new long[] {h}));
        out.add(new TensorInfo("lm_head.weight", t, new long[] {s.vocab(), h}));
        return out;
    }

    private static void addFfn(List<TensorInfo> out, String prefix, DType t, long hidden, long inter) {
        out.add(new TensorInfo(prefix + "gate_proj.weight", t, new long[] {inter, hidden}));
        out.add(new TensorInfo(prefix + "up_proj.weight", t, new long[] {inter, hidden}));
        out.add(new TensorInfo(prefix + "down_proj.weight", t, new long[] {hidden, inter}));
    }

    /** A {@code config.json} with the fields the adapter reads and the ones a Hy3 loader expects beside them. */
    private static byte[] configJson(Spec s) {
        Map<String, Object> c = new LinkedHashMap<>();
        c.put("architectures", List.of("HYV3ForCausalLM"));
        c.put("model_type", "hy_v3");
        c.put("num_hidden_layers", s.layers());
        c.put("num_nextn_predict_layers", s.mtpLayers());
        c.put("num_experts", s.experts());
        c.put("hidden_size", s.hidden());
        c.put("moe_intermediate_size", s.moeInter());
        c.put("intermediate_size", s.denseInter());
        c.put("first_k_dense_replace", 1);
        c.put("num_attention_heads", s.heads());
        c.put("num_key_value_heads", s.kvHeads());
        c.put("head_dim", s.headDim());
        c.put("vocab_size", s.vocab());
        c.put("torch_dtype", switch (s.dtype()) {
            case BF16 -> "bfloat16";
            case F16 -> "float16";
            case F32 -> "float32";
            default -> s.dtype().name().toLowerCase(Locale.ROOT);
        });
        try {
            return new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT).writeValueAsBytes(c);
        } catch (JsonProcessingException e) {
            throw new UncheckedIOException(e);
        }
    }
}
