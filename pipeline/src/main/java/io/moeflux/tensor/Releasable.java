package io.moeflux.tensor;

/** Something that holds memory or a file mapping until released. Implementations make release idempotent. */
@FunctionalInterface
public interface Releasable {
    Releasable NONE = () -> {};

    void release();
}
