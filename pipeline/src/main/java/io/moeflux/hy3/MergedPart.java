package io.moeflux.hy3;

import io.moeflux.tensor.TensorInfo;

/**
 * Where one per-expert weight lands in from-hf's output: transposed into part {@code part} (of
 * {@code partsPerSlab}, concatenated along the last dimension) of expert slab {@code slab} of the merged
 * tensor {@code merged}. A receiver that knows the merged tensor's place in a file can write each slab
 * there as soon as its parts are in, instead of holding the layer until its merge window closes.
 *
 * @param merged       the merged tensor: name, output dtype and shape {@code [experts, cols, width]}
 * @param slab         the expert's index within the merged tensor (expert number minus the range start)
 * @param part         0 for gate (or down), 1 for up
 * @param partsPerSlab 2 for {@code gate_and_up_projs}, 1 for {@code down_projs}
 */
public record MergedPart(TensorInfo merged, int slab, int part, int partsPerSlab) {
    /** Bytes of one expert's slab of the merged tensor. */
    public long slabBytes() {
        return merged.byteSize() / merged.shape()[0];
    }
}
