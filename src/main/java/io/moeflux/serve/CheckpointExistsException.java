package io.moeflux.serve;

/** An upload named a checkpoint that is already committed; the ingest service never overwrites one. */
public final class CheckpointExistsException extends RuntimeException {
    public CheckpointExistsException(String message) {
        super(message);
    }
}
