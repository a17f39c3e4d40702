package io.moeflux.tensor;

import java.io.IOException;
import java.lang.foreign.MemorySegment;

/**
 * Receives a tensor's bytes in order, one chunk at a time.
 *
 * <p>A chunk is only valid during the call: producers reuse scratch buffers, so a sink that needs the
 * bytes later must copy them.
 */
@FunctionalInterface
public interface ByteSink {
    void write(MemorySegment chunk) throws IOException;
}
