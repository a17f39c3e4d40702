package io.moeflux.cli;

/** The input cannot be used as asked (for example a config that contradicts the flags); exit code 3. */
final class BadInputException extends RuntimeException {
    BadInputException(String message) {
        super(message);
    }
}
