package io.moeflux.connect.safetensors;

import java.nio.channels.FileChannel;
import java.util.concurrent.locks.Lock;

/**
 * A planned tensor's place in a shard file being written.
 *
 * @param channel   the shard file, open for positional reads and writes; never change its position
 * @param offset    where the tensor's first byte goes
 * @param byteSize  the tensor's bytes
 * @param writeLock held around each write into the file: the sink's own writers take it too, so that
 *                  writes queue here instead of spinning on the kernel's inode lock
 */
public record Placement(FileChannel channel, long offset, long byteSize, Lock writeLock) {}
