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
 * @param passThrough input tensors passed on at once with their bytes untouched (renamed or not), by input
 *                    name, with their output names: what a source may stream straight into place
 */
public record ConversionLayout(List<TensorInfo> planned, Map<String, String> passThrough) {
    public ConversionLayout {
        planned = List.copyOf(planned);
        passThrough = Collections.unmodifiableMap(new LinkedHashMap<>(passThrough));
    }
}
