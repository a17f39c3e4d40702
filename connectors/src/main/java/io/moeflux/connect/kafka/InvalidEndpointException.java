package io.moeflux.connect.kafka;

/** A {@code kafka://} location that does not parse: a usage error of whoever typed it, not bad data. */
public final class InvalidEndpointException extends IllegalArgumentException {
    InvalidEndpointException(String message) {
        super(message);
    }
}
