package io.moeflux.tensor;

/**
 * How a lazily transposed tensor cuts its output: tiles of about 512 KB (one kernel call, small enough
 * for the gather to stay in L2) grouped into chunks of about 8 MB (one write to the sink, large enough
 * that system calls do not dominate).
 *
 * @param rowBytes  bytes of one output row
 * @param tileRows  output rows per kernel call, a multiple of 4 when there are that many (the kernel's
 *                  fast path transposes 4x4 blocks)
 * @param chunkRows output rows per sink write, a multiple of {@code tileRows} (or all rows)
 */
record Blocking(long rowBytes, int tileRows, int chunkRows) {
    private static final long TILE_BYTES = 512 << 10;
    private static final long CHUNK_BYTES = 8 << 20;

    static Blocking of(int outputRows, int rowElements, DType dtype) {
        long rowBytes = (long) rowElements * dtype.byteSize();
        int tile = (int) Math.max(1, Math.min(outputRows, TILE_BYTES / Math.max(1, rowBytes)));
        if (tile >= 4 && tile < outputRows) {
            tile -= tile % 4;
        }
        int chunk = (int) Math.max(tile, Math.min(outputRows, CHUNK_BYTES / Math.max(1, rowBytes) / tile * tile));
        return new Blocking(rowBytes, tile, chunk);
    }
}
