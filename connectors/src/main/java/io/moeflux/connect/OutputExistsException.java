package io.moeflux.connect;

/** The output location already holds something and overwriting was not asked for. */
public class OutputExistsException extends RuntimeException {
    public OutputExistsException(String message) {
        super(message);
    }
}
