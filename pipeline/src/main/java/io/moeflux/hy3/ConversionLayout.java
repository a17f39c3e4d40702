package io.moeflux.hy3;

import io.moeflux.tensor.TensorInfo;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What a conversion makes of a checkpoint's tensors, worked out from their names, types and shapes
 * before any byte moves, by one run of the conversion's own stages over placeholders.
 *
 * @param planned     the output tensors, in output order: what a file sink lays its headers out from
 * @param passThrough input tensors passed on with their bytes untouched (renamed or not), by input name,
 *                    with their output names: what a receiver may write straight into place
 * @param mergedParts input tensors that from-hf merges, by input name, with where each lands in its
 *                    merged tensor; empty for to-hf
 * @param splitParts  input tensors that to-hf splits, by input name, with the per-expert weights each
 *                    gives, in output order; empty for from-hf
 */
public record ConversionLayout(List<TensorInfo> planned, Map<String, String> passThrough, Map<String, MergedPart> mergedParts,
        Map<String, List<SplitPart>> splitParts) {
    public ConversionLayout {
        planned = List.copyOf(planned);
        passThrough = Collections.unmodifiableMap(new LinkedHashMap<>(passThrough));
        mergedParts = Collections.unmodifiableMap(new LinkedHashMap<>(mergedParts));
        LinkedHashMap<String, List<SplitPart>> splits = new LinkedHashMap<>();
        splitParts.forEach((name, parts) -> splits.put(name, List.copyOf(parts)));
        splitParts = Collections.unmodifiableMap(splits);
    }
}
