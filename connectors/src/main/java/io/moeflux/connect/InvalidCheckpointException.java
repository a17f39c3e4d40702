package io.moeflux.connect;

/** A checkpoint (file, folder, index or stream) breaks its format; the message names the file and tensor. */
public class InvalidCheckpointException extends RuntimeException {
    public InvalidCheckpointException(String message) {
        super(message);
    }

    public InvalidCheckpointException(String message, Throwable cause) {
        super(message, cause);
    }
}
