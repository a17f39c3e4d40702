package io.moeflux.pipeline;

/**
 * What a sink committed.
 *
 * @param location where the checkpoint now is (a folder, {@code kafka://host:port/topic?checkpoint=id})
 * @param tensors  how many tensors
 * @param bytes    how many tensor bytes (headers and framing not counted)
 * @param files    files or records that carry them (shards for a folder)
 */
public record CommitSummary(String location, long tensors, long bytes, int files) {}
