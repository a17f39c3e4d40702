package io.moeflux.hy3;

import java.util.List;
import java.util.Optional;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The key rules of Automodel's {@code HYV3StateDictAdapter} and {@code MoESplitExpertsStateDictMixin}.
 *
 * <p>Python's {@code re.match} anchors at the start only, which is {@link Matcher#lookingAt()};
 * {@code re.subn} replaces every occurrence, which is {@link Matcher#replaceAll(String)}.
 */
public final class Hy3Keys {
    private Hy3Keys() {}

    private record Rule(Pattern pattern, String replacement) {}

    private static final List<Rule> HF_TO_NATIVE = List.of(
            new Rule(Pattern.compile("\\.mlp\\.expert_bias$"), ".mlp.gate.e_score_correction_bias"),
            new Rule(Pattern.compile("\\.mlp\\.router\\.gate\\.weight$"), ".mlp.gate.weight"),
            new Rule(Pattern.compile("\\.mlp\\.shared_mlp\\."), ".mlp.shared_experts."));

    private static final List<Rule> NATIVE_TO_HF = List.of(
            new Rule(Pattern.compile("\\.mlp\\.gate\\.e_score_correction_bias$"), ".mlp.expert_bias"),
            new Rule(Pattern.compile("\\.mlp\\.gate\\.weight$"), ".mlp.router.gate.weight"),
            new Rule(Pattern.compile("\\.mlp\\.shared_experts\\."), ".mlp.shared_mlp."));

    private static final Pattern MTP_LAYER = Pattern.compile("(?:model\\.)?layers\\.(\\d+)\\.");
    private static final Pattern EXPERT = Pattern.compile(
            "(?<prefix>(?:model\\.)?(?:language_model\\.)?)layers\\.(\\d+)\\.mlp\\.experts\\.(\\d+)\\.(gate_proj|up_proj|down_proj)\\.weight");
    private static final Pattern LAYER = Pattern.compile("layers\\.(\\d+)");

    /** On-disk name to native name: the first rule that matches, applied everywhere it matches. */
    public static String hfToNative(String key) {
        return applyFirst(HF_TO_NATIVE, key);
    }

    /** Native name to on-disk name. */
    public static String nativeToHf(String key) {
        return applyFirst(NATIVE_TO_HF, key);
    }

    private static String applyFirst(List<Rule> rules, String key) {
        for (Rule rule : rules) {
            Matcher m = rule.pattern.matcher(key);
            if (m.find()) {
                return m.replaceAll(Matcher.quoteReplacement(rule.replacement));
            }
        }
        return key;
    }

    /** True for keys of layers at index {@code >= numHiddenLayers} (the MTP layer is stored as layer 80). */
    public static boolean isMtpKey(String key, int numHiddenLayers) {
        Matcher m = MTP_LAYER.matcher(key);
        return m.lookingAt() && compareDecimal(m.group(1), numHiddenLayers) >= 0;
    }

    /** Compares a string of digits with an int without overflowing on absurdly long layer numbers. */
    private static int compareDecimal(String digits, int value) {
        String trimmed = digits.replaceFirst("^0+(?=\\d)", "");
        if (trimmed.length() > 10) {
            return 1;
        }
        return Long.compare(Long.parseLong(trimmed), value);
    }

    /** The reference drops every non-expert key that ends with {@code _scale_inv} (FP8 scales). */
    public static boolean isScaleInv(String key) {
        return key.endsWith("_scale_inv");
    }

    /** Which of an expert's three projections a key holds. */
    public enum Projection {
        GATE("gate_proj"), UP("up_proj"), DOWN("down_proj");

        private final String keyPart;

        Projection(String keyPart) {
            this.keyPart = keyPart;
        }

        public String keyPart() {
            return keyPart;
        }

        static Projection of(String keyPart) {
            return switch (keyPart) {
                case "gate_proj" -> GATE;
                case "up_proj" -> UP;
                default -> DOWN;
            };
        }
    }

    /**
     * A per-expert on-disk key, {@code {prefix}layers.L.mlp.experts.E.{gate,up,down}_proj.weight}.
     *
     * @param layer the layer number as written in the key (the merged names reuse it verbatim)
     */
    public record ExpertKey(String prefix, String layer, String expertDigits, Projection projection) {
        /** The key this was parsed from (for keys without trailing text after {@code .weight}). */
        public String key() {
            return prefix + "layers." + layer + ".mlp.experts." + expertDigits + "." + projection.keyPart + ".weight";
        }

        /** The expert number, or -1 when it does not fit an int (so it is outside every range). */
        public long expert() {
            return expertDigits.length() > 9 ? -1 : Long.parseLong(expertDigits);
        }

        /** Native name of the grouped tensor this key merges into. */
        public String mergedName() {
            return prefix + "layers." + layer + ".mlp.experts."
                    + (projection == Projection.DOWN ? "down_projs" : "gate_and_up_projs");
        }

        public int layerNumber() {
            return layer.length() > 9 ? Integer.MAX_VALUE : Integer.parseInt(layer);
        }
    }

    /**
     * Parses a per-expert key the way the mixin does: only keys that contain {@code .mlp.experts.} and
     * end with {@code .weight} are candidates, and the pattern is matched at the start only.
     */
    public static Optional<ExpertKey> parseExpertKey(String key) {
        if (!key.contains(".mlp.experts.") || !key.endsWith(".weight")) {
            return Optional.empty();
        }
        Matcher m = EXPERT.matcher(key);
        if (!m.lookingAt()) {
            return Optional.empty();
        }
        return Optional.of(new ExpertKey(m.group("prefix"), m.group(2), m.group(3), Projection.of(m.group(4))));
    }

    private static final Pattern NAMES_AN_EXPERT = Pattern.compile("layers\\.\\d+\\.mlp\\.experts\\.\\d+\\.");

    /**
     * Whether a key names one expert ({@code layers.L.mlp.experts.E.}, under any prefix): a base weight
     * or a LoRA matrix of the on-disk layout, merged or, under an unusual prefix, passed on per expert.
     */
    public static boolean namesAnExpert(String key) {
        return key.contains(".mlp.experts.") && NAMES_AN_EXPERT.matcher(key).find();
    }

    /** Native grouped {@code gate_and_up_projs}: the mixin's test. */
    public static boolean isGroupedGateUp(String fqn) {
        return fqn.contains(".mlp.experts.gate_and_up_projs") && fqn.endsWith(".gate_and_up_projs");
    }

    /** Native grouped {@code down_projs} by name; the caller also checks rank 3 and {@code shape[1] == inter}. */
    public static boolean isGroupedDown(String fqn) {
        return fqn.contains(".mlp.experts.down_projs") && fqn.endsWith(".down_projs");
    }

    /** The first {@code layers.N} in a name, as the mixin's {@code re.search} finds it. */
    public static Optional<String> layerOf(String fqn) {
        Matcher m = LAYER.matcher(fqn);
        return m.find() ? Optional.of(m.group(1)) : Optional.empty();
    }

    /** The four grouped LoRA tensors of a native expert layer, named by their key's last part. */
    public enum GroupedLora {
        /** {@code [E, hidden, r]}: the A shared by gate_proj and up_proj. */
        GATE_AND_UP_A("lora_gate_and_up_A"),
        /** {@code [E, r, 2*inter]}: gate_proj's B then up_proj's B, concatenated. */
        GATE_AND_UP_B("lora_gate_and_up_B"),
        /** {@code [E, inter, r]}. */
        DOWN_A("lora_down_A"),
        /** {@code [E, r, hidden]}. */
        DOWN_B("lora_down_B");

        private final String suffix;

        GroupedLora(String suffix) {
            this.suffix = suffix;
        }

        public String suffix() {
            return suffix;
        }
    }

    /** Which matrix of a LoRA pair a key holds. */
    public enum LoraMatrix { A, B }

    /**
     * Where an expert LoRA key sits: {@code prefix} is everything before its last {@code layers.N.}
     * ({@code model.}, {@code base_model.model.model.}, ...), and the mixin keeps it in both directions.
     */
    public record LoraLayer(String prefix, String layer) {
        /** Native name of one of this layer's grouped LoRA tensors. */
        public String grouped(GroupedLora kind) {
            return prefix + "layers." + layer + ".mlp.experts." + kind.suffix();
        }

        /** On-disk name of one expert's LoRA matrix: {@code P layers.L.mlp.experts.e.{proj}.lora_{A,B}.weight}. */
        public String perExpert(long expert, Projection projection, LoraMatrix matrix) {
            return prefix + "layers." + layer + ".mlp.experts." + expert + "." + projection.keyPart + ".lora_" + matrix + ".weight";
        }
    }

    /** A native grouped expert LoRA key. */
    public record GroupedLoraKey(LoraLayer layer, GroupedLora kind) {}

    /** A per-expert on-disk LoRA key; {@code expert} is -1 when its digits do not fit an int. */
    public record LoraExpertKey(LoraLayer layer, long expert, Projection projection, LoraMatrix matrix) {}

    /**
     * The fused PEFT ParamWrapper form of one layer's expert LoRA, 2-D with the experts folded into the
     * rank: the outer wrapper is down_proj, the inner ({@code base_layer.}) gate_and_up.
     */
    public enum FusedLora {
        /** {@code experts.lora_A.weight [r*E, hidden]}, reshaped to {@code lora_down_B [E, r, hidden]}. */
        DOWN_A("lora_A.weight", GroupedLora.DOWN_B),
        /** {@code experts.lora_B.weight [inter, r*E]}, reshaped to {@code [inter, r, E]} and permuted to {@code lora_down_A [E, inter, r]}. */
        DOWN_B("lora_B.weight", GroupedLora.DOWN_A),
        /** {@code experts.base_layer.lora_A.weight [r*E, 2*inter]} to {@code lora_gate_and_up_B [E, r, 2*inter]}. */
        GATE_AND_UP_A("base_layer.lora_A.weight", GroupedLora.GATE_AND_UP_B),
        /** {@code experts.base_layer.lora_B.weight [hidden, r*E]} to {@code lora_gate_and_up_A [E, hidden, r]}. */
        GATE_AND_UP_B("base_layer.lora_B.weight", GroupedLora.GATE_AND_UP_A);

        private final String keyTail;
        private final GroupedLora target;

        FusedLora(String keyTail, GroupedLora target) {
            this.keyTail = keyTail;
            this.target = target;
        }

        /** The grouped native tensor this fused one becomes. */
        public GroupedLora target() {
            return target;
        }

        /** True for the two whose expert dimension is folded into the last dimension (a transpose, not a reshape). */
        public boolean expertsInLastDim() {
            return this == DOWN_B || this == GATE_AND_UP_B;
        }

        static FusedLora of(String keyTail) {
            for (FusedLora f : values()) {
                if (f.keyTail.equals(keyTail)) {
                    return f;
                }
            }
            throw new IllegalArgumentException(keyTail);
        }
    }

    /** A fused ParamWrapper LoRA key. */
    public record FusedLoraKey(LoraLayer layer, FusedLora kind) {}

    // The mixin finds a LoRA key's prefix with a greedy (.*)layers\.(\d+)\., i.e. before the last layers.N.
    private static final Pattern LORA_LAYER = Pattern.compile("(.*)layers\\.(\\d+)\\.");
    private static final Pattern LORA_EXPERT = Pattern.compile(
            "(?<prefix>.*)layers\\.(?<layer>\\d+)\\.mlp\\.experts\\.(?<expert>\\d+)\\.(?<proj>gate_proj|up_proj|down_proj)\\.lora_(?<matrix>[AB])\\.weight");
    private static final Pattern FUSED_LORA = Pattern.compile(
            "(?<prefix>.*)layers\\.(?<layer>\\d+)\\.mlp\\.experts\\.(?<tail>(?:base_layer\\.)?lora_[AB]\\.weight)");

    /**
     * A native grouped expert LoRA key, by the mixin's test: it contains {@code .mlp.experts.<s>} and ends
     * with {@code .<s>}. Empty as well when the key names no {@code layers.N.}, which the mixin passes on.
     */
    public static Optional<GroupedLoraKey> parseGroupedLora(String fqn) {
        for (GroupedLora kind : GroupedLora.values()) {
            if (fqn.contains(".mlp.experts." + kind.suffix) && fqn.endsWith("." + kind.suffix)) {
                Matcher m = LORA_LAYER.matcher(fqn);
                return m.find() ? Optional.of(new GroupedLoraKey(new LoraLayer(m.group(1), m.group(2)), kind)) : Optional.empty();
            }
        }
        return Optional.empty();
    }

    /** A per-expert on-disk LoRA key, matched at the start as the mixin's {@code re.match} does. */
    public static Optional<LoraExpertKey> parseLoraExpertKey(String key) {
        if (!key.contains(".mlp.experts.")) {
            return Optional.empty();
        }
        Matcher m = LORA_EXPERT.matcher(key);
        if (!m.lookingAt()) {
            return Optional.empty();
        }
        String digits = m.group("expert");
        long expert = digits.length() > 9 ? -1 : Long.parseLong(digits);
        return Optional.of(new LoraExpertKey(new LoraLayer(m.group("prefix"), m.group("layer")), expert,
                Projection.of(m.group("proj")), LoraMatrix.valueOf(m.group("matrix"))));
    }

    /** A fused ParamWrapper LoRA key; the whole key must match, as the mixin's pattern ends in {@code $}. */
    public static Optional<FusedLoraKey> parseFusedLora(String key) {
        if (!key.contains(".mlp.experts.")) {
            return Optional.empty();
        }
        Matcher m = FUSED_LORA.matcher(key);
        if (!m.matches()) {
            return Optional.empty();
        }
        return Optional.of(new FusedLoraKey(new LoraLayer(m.group("prefix"), m.group("layer")), FusedLora.of(m.group("tail"))));
    }

    /** The first five of {@code keys}, comma-separated, and how many more there are: how errors name missing keys. */
    static String firstFive(List<String> keys) {
        return String.join(", ", keys.subList(0, Math.min(5, keys.size())))
                + (keys.size() > 5 ? " (and " + (keys.size() - 5) + " more)" : "");
    }

    /** On-disk name of one split expert projection; the split path always emits the {@code model.} prefix. */
    public static String splitExpertKey(String layer, long expert, Projection p) {
        return "model.layers." + layer + ".mlp.experts." + expert + "." + p.keyPart + ".weight";
    }
}
