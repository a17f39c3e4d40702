package io.moeflux.connect.safetensors;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSink;
import java.io.IOException;

/**
 * A sink whose files can be laid out before any tensor arrives, so that a source receiving bytes
 * (an upload) can put tensors that need no conversion straight into their final place instead of
 * spooling them first: one write instead of two.
 */
public interface PlaceableSink extends CheckpointSink {
    /**
     * Creates the checkpoint's staging folder and shard files, headers written, now. The caller owns the
     * result: it must either {@link PlannedCheckpoint#write write} it or {@link PlannedCheckpoint#abort
     * abort} it.
     *
     * @param planned must list the tensors
     * @throws io.moeflux.connect.OutputExistsException when the output exists and may not be replaced
     */
    PlannedCheckpoint open(CheckpointDescriptor planned) throws IOException;
}
