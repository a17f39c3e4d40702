package io.moeflux.hy3;

import io.moeflux.tensor.DType;
import java.util.Optional;
import java.util.regex.Pattern;

/**
 * How to convert, beyond the model facts.
 *
 * @param targetDtype     from-hf: type of the merged expert tensors (the reference adapter's {@code dtype}, bf16)
 * @param epSize          from-hf: expert-parallel world size; 1 keeps every expert
 * @param epRank          from-hf: this rank, {@code 0 <= epRank < epSize}
 * @param excludeKeyRegex to-hf: drop keys whose renamed name starts with a match ({@code re.match})
 * @param lossyLora       from-hf: convert expert LoRA adapters exactly as the reference does, also where it
 *                        drops tensors (an up_proj A that differs from gate_proj's, a layer whose LoRA groups
 *                        are torn, per-expert LoRA overridden by the fused form); by default those are refused
 * @param allowNoExperts  convert a checkpoint in which no tensor is an expert tensor of the input's layout;
 *                        by default that is refused, since it is usually the other layout, which either
 *                        direction would pass through unchanged while reporting success
 */
public record Hy3Options(DType targetDtype, int epSize, int epRank, Optional<Pattern> excludeKeyRegex, boolean lossyLora,
                         boolean allowNoExperts) {
    public static final Hy3Options DEFAULTS = new Hy3Options(DType.BF16, 1, 0, Optional.empty(), false, false);

    public Hy3Options {
        if (targetDtype != DType.BF16 && targetDtype != DType.F16 && targetDtype != DType.F32) {
            throw new IllegalArgumentException("target dtype must be bf16, f16 or f32, got " + targetDtype);
        }
        if (epSize < 1 || epRank < 0 || epRank >= epSize) {
            throw new IllegalArgumentException("need 0 <= ep-rank < ep-size, got ep-size " + epSize + ", ep-rank " + epRank);
        }
    }

    public Hy3Options withTargetDtype(DType d) {
        return new Hy3Options(d, epSize, epRank, excludeKeyRegex, lossyLora, allowNoExperts);
    }

    public Hy3Options withExpertParallel(int size, int rank) {
        return new Hy3Options(targetDtype, size, rank, excludeKeyRegex, lossyLora, allowNoExperts);
    }

    public Hy3Options withExcludeKeyRegex(String regex) {
        return new Hy3Options(targetDtype, epSize, epRank, Optional.of(Pattern.compile(regex)), lossyLora, allowNoExperts);
    }

    public Hy3Options withLossyLora(boolean lossy) {
        return new Hy3Options(targetDtype, epSize, epRank, excludeKeyRegex, lossy, allowNoExperts);
    }

    public Hy3Options withAllowNoExperts(boolean allow) {
        return new Hy3Options(targetDtype, epSize, epRank, excludeKeyRegex, lossyLora, allow);
    }

    /**
     * The experts this rank keeps, {@code [start, end)}: the first {@code n % epSize} ranks take one
     * expert more, as Automodel's {@code get_expert_range_for_rank_from_mesh}.
     */
    public ExpertRange expertRange(int numExperts) {
        int per = numExperts / epSize;
        int rem = numExperts % epSize;
        int start = epRank < rem ? epRank * (per + 1) : epRank * per + rem;
        int count = epRank < rem ? per + 1 : per;
        return new ExpertRange(start, start + count);
    }

    /** Experts {@code [start, end)}. */
    public record ExpertRange(int start, int end) {
        public boolean contains(long expert) {
            return expert >= start && expert < end;
        }

        public int size() {
            return end - start;
        }
    }
}
