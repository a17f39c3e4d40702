package io.moeflux.connect;

/**
 * A safetensors header beyond what this process reads: longer than the format's or a service's limit, or
 * listing more tensors than one header may. A kind of invalid checkpoint; a service answers it with 413.
 */
public class HeaderTooLargeException extends InvalidCheckpointException {
    public HeaderTooLargeException(String message) {
        super(message);
    }
}
