package io.moeflux.hy3;

/** What from-hf's expert merge emits: see {@code ExpertMerge}. */
public enum MergedOutput {
    /** Whole merged tensors, each once its layer's last expert is in: for sinks that take whole tensors only. */
    WHOLE,
    /** One piece per expert slab, as soon as that expert's weights are in: for sinks that place pieces. */
    SLAB_PIECES
}
