package io.moeflux.connect.safetensors;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.util.Objects;
import java.util.concurrent.locks.Lock;

/**
 * Positional writes into checkpoint and spool files, in system calls of at most
 * {@link #MAX_WRITE_BYTES}.
 *
 * <p>Not larger: the page cache backs a write with folios about as large as the write, and on a VM whose
 * balloon reports free memory to the host (as this project's machines do), fresh high-order folios
 * fault in on the host: 8 MB writes ran at 0.4 GB/s there and 256 KB writes at 4.8 GB/s, with a 1 MB
 * write already on the slow side ({@code src/bench/write-size-bench.sh}).
 */
public final class FileWrites {
    public static final int MAX_WRITE_BYTES = 256 << 10;

    private FileWrites() {}

    /** Writes all of {@code src} at {@code position}. */
    public static void write(FileChannel channel, ByteBuffer src, long position) throws IOException {
        writeInSlices(channel, src, position, null);
    }

    /**
     * Writes all of {@code src} at {@code position}, holding {@code lock} around each system call, so
     * that writers sharing the file take turns between calls.
     */
    public static void write(FileChannel channel, ByteBuffer src, long position, Lock lock) throws IOException {
        writeInSlices(channel, src, position, Objects.requireNonNull(lock, "lock"));
    }

    private static void writeInSlices(FileChannel channel, ByteBuffer src, long position, Lock lockOrNull)
            throws IOException {
        long at = position;
        int end = src.limit();
        while (src.position() < end) {
            src.limit(Math.min(end, src.position() + MAX_WRITE_BYTES));
            if (lockOrNull != null) {
                lockOrNull.lock();
            }
            try {
                while (src.hasRemaining()) {
                    at += channel.write(src, at);
                }
            } finally {
                if (lockOrNull != null) {
                    lockOrNull.unlock();
                }
            }
        }
        src.limit(end);
    }
}
