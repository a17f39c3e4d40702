package io.moeflux.serve;

/** The service cannot take this upload now, though it may shortly: answered with 503 and {@code Retry-After}. */
final class ServiceBusyException extends RuntimeException {
    ServiceBusyException(String message) {
        super(message);
    }
}
