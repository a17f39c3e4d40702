package io.moeflux.pipeline;

/**
 * Counts what a sink has written, for progress bars and metrics; called from writer threads, so
 * implementations must be thread-safe and cheap.
 */
public interface Progress {
    Progress NONE = new Progress() {
        @Override
        public void bytesWritten(long bytes) {}

        @Override
        public void tensorWritten(String fqn) {}
    };

    void bytesWritten(long bytes);

    void tensorWritten(String fqn);
}
