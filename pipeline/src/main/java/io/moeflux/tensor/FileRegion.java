package io.moeflux.tensor;

import java.nio.channels.FileChannel;

/**
 * Where a tensor's bytes lie unmodified in a file. A sink that writes to a file can then copy them in
 * the kernel ({@code copy_file_range}) instead of through memory, as {@code cp} does.
 *
 * @param channel  open for reading while the tensor is live; only positional reads may be used on it
 * @param position byte offset of the tensor in the file
 * @param size     bytes of the tensor
 */
public record FileRegion(FileChannel channel, long position, long size) {}
