package io.moeflux.hy3;

import io.moeflux.tensor.TensorInfo;

/**
 * Where one per-expert weight of to-hf's output comes from: columns {@code [colStart, colStart + colCount)}
 * of expert slab {@code expert} of a grouped tensor, transposed. A receiver that knows the weight's place
 * in a file can write it there as soon as that expert's slab of the grouped tensor has arrived, instead of
 * spooling the whole grouped tensor first.
 *
 * @param split    the per-expert weight: name, type and shape {@code [colCount, rows]}
 * @param expert   the slab's index within the grouped tensor
 * @param colStart the first column of the slab it takes
 * @param colCount how many columns it takes
 */
public record SplitPart(TensorInfo split, int expert, long colStart, long colCount) {}
