package io.moeflux.serve;

/** The upload body is not a sequence of valid safetensors blobs; the message names the blob and the problem. */
public final class MalformedUploadException extends RuntimeException {
    public MalformedUploadException(String message) {
        super(message);
    }

    public MalformedUploadException(String message, Throwable cause) {
        super(message, cause);
    }
}
