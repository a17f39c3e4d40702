package io.moeflux.connect.safetensors;

import io.moeflux.pipeline.Progress;
import java.nio.file.Path;
import java.util.Objects;

/**
 * How a {@link SafetensorsSink} writes a checkpoint folder.
 *
 * @param output       the checkpoint folder to create; it appears, complete, only at commit
 * @param maxShardSize bytes of tensor data per shard file (HF's {@code max_shard_size}, default 5 GB);
 *                     a single larger tensor gets a shard of its own
 * @param overwrite    replace an existing non-empty {@code output} (it is swapped out at commit, so a
 *                     failed write leaves the old checkpoint untouched)
 * @param writeThreads tensors (and slabs of merged tensors) written concurrently; with lazily
 *                     transposed expert tensors this is also the number of cores transposing, so tune
 *                     it together with the machine's cores rather than its disks; each thread holds
 *                     about 2 MB of scratch
 * @param progress     told of every chunk and tensor written
 * @param durable      commit only once the files, the folder and its name are on the device (fsync), so
 *                     that a crash or power loss after the commit cannot lose or tear the checkpoint;
 *                     without it the commit is as atomic but only as lasting as the page cache
 */
public record SafetensorsSinkOptions(Path output, long maxShardSize, boolean overwrite, int writeThreads, Progress progress,
                                     boolean durable) {
    public static final long DEFAULT_MAX_SHARD_SIZE = 5_000_000_000L;

    public SafetensorsSinkOptions {
        Objects.requireNonNull(output, "output");
        Objects.requireNonNull(progress, "progress");
        if (maxShardSize <= 0) {
            throw new IllegalArgumentException("max shard size must be positive, got " + maxShardSize);
        }
        if (writeThreads < 1) {
            throw new IllegalArgumentException("write threads must be at least 1, got " + writeThreads);
        }
    }

    /**
     * Defaults: 5 GB shards, durable, no overwrite, one writer more than there are cores (writes into one file
     * take turns, and the spare writer keeps every core transposing meanwhile), no progress reporting.
     */
    public static SafetensorsSinkOptions to(Path output) {
        return new SafetensorsSinkOptions(output, DEFAULT_MAX_SHARD_SIZE, false,
                Runtime.getRuntime().availableProcessors() + 1, Progress.NONE, true);
    }

    public SafetensorsSinkOptions withMaxShardSize(long bytes) {
        return new SafetensorsSinkOptions(output, bytes, overwrite, writeThreads, progress, durable);
    }

    public SafetensorsSinkOptions withOverwrite(boolean replace) {
        return new SafetensorsSinkOptions(output, maxShardSize, replace, writeThreads, progress, durable);
    }

    public SafetensorsSinkOptions withWriteThreads(int threads) {
        return new SafetensorsSinkOptions(output, maxShardSize, overwrite, threads, progress, durable);
    }

    public SafetensorsSinkOptions withDurable(boolean sync) {
        return new SafetensorsSinkOptions(output, maxShardSize, overwrite, writeThreads, progress, sync);
    }

    public SafetensorsSinkOptions withProgress(Progress p) {
        return new SafetensorsSinkOptions(output, maxShardSize, overwrite, writeThreads, p, durable);
    }
}
