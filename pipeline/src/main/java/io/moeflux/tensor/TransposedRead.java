package io.moeflux.tensor;

/**
 * How a conversion will read a 2-D input transposed: into slab {@code slab}, together with the other
 * {@code partsPerSlab - 1} inputs of that slab, one tile of {@code blockCols} columns at a time. A source
 * that receives the bytes can hold them in that layout ({@link ColumnBlockedTensor}) and knows when a
 * slab has all its inputs.
 */
public record TransposedRead(int blockCols, String slab, int partsPerSlab) {}
