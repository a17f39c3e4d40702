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

    /** On-disk name of one split expert projection; the split path always emits the {@code model.} prefix. */
    public static String splitExpertKey(String layer, long expert, Projection p) {
        return "model.layers." + layer + ".mlp.experts." + expert + "." + p.keyPart + ".weight";
    }
}
