package io.moeflux.hy3;

import java.util.List;

/** Some layer lacks gate, up or down weights of experts this rank needs; nothing may be committed. */
public final class MissingExpertsException extends IllegalStateException {
    private final int missingCount;
    private final List<String> firstMissing;

    MissingExpertsException(String message, int missingCount, List<String> firstMissing) {
        super(message);
        this.missingCount = missingCount;
        this.firstMissing = List.copyOf(firstMissing);
    }

    public int missingCount() {
        return missingCount;
    }

    /** The first five missing keys, by layer, prefix, expert and projection. */
    public List<String> firstMissing() {
        return firstMissing;
    }
}
