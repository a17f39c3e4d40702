package io.moeflux.connect.safetensors;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSink;

/**
 * Writes checkpoints as safetensors folders, byte-compatible with huggingface/safetensors: shards of
 * at most {@code maxShardSize} named {@code model-0000i-of-0000n.safetensors} with a
 * {@code model.safetensors.index.json} (or one {@code model.safetensors}), and {@code config.json}; or,
 * when the planned checkpoint assigns each tensor its file ({@link CheckpointDescriptor#outputFiles()}),
 * in the files it assigns, with the index.
 *
 * <p>Given the planned tensors, the sink lays out every header first and writes each tensor, or piece
 * of one (an expert slab of a merged tensor, a rank's rows), straight into its final place,
 * concurrently, and commits only when every tensor is covered exactly once. Without a plan it places
 * tensors in a spool file and lays the shards out at commit. Either way the output depends
 * only on the set of tensors, not on their arrival order, and it appears atomically: everything is
 * written into a hidden staging folder beside the output that is renamed into place at commit and
 * deleted on error or cancellation. Unless the options say otherwise the commit is also durable: it
 * returns only once every file, the folder and its new name are on the device (see {@link Staging}).
 */
public final class SafetensorsSink {
    private SafetensorsSink() {}

    /** A folder sink; it {@linkplain CheckpointSink#placesPieces places pieces} of tensors. */
    public static CheckpointSink create(SafetensorsSinkOptions options) {
        return new FolderSink(options, CommitCalls.SYSTEM);
    }
}
