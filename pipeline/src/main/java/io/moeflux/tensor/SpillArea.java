package io.moeflux.tensor;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

/**
 * Where network sources put the tensors they receive: small ones in off-heap memory, large ones in
 * memory-mapped temporary files.
 *
 * <p>A from-hf merge for a destination that takes whole tensors holds a layer's experts until the last
 * one arrives (7.2 GB for a Hy3-preview layer). Held in anonymous memory that would grow with the layer; held in a shared file
 * mapping it is page cache, which the kernel writes back and evicts under pressure, so resident
 * memory stays bounded whatever the layer size. Each file is unlinked as soon as it is mapped, so
 * nothing is left behind even if the process dies.
 */
public final class SpillArea {
    private final Path dir;
    private final long thresholdBytes;

    private SpillArea(Path dir, long thresholdBytes) {
        this.dir = dir;
        this.thresholdBytes = thresholdBytes;
    }

    /**
     * @param dir            where temporary files go (same file system as the output is a good choice)
     * @param thresholdBytes tensors of at least this many bytes are file-backed
     */
    public static SpillArea in(Path dir, long thresholdBytes) {
        return new SpillArea(dir, thresholdBytes);
    }

    /** In the system's temporary folder; tensors of 1 MiB and more are file-backed. */
    public static SpillArea inTempDir() {
        return new SpillArea(Path.of(System.getProperty("java.io.tmpdir")), 1L << 20);
    }

    /** True when a tensor of this many bytes would live in a file mapping rather than in memory. */
    public boolean isFileBacked(long bytes) {
        return bytes >= thresholdBytes;
    }

    /** A zero-filled tensor the caller fills and owns. */
    public DenseTensor allocate(DType dtype, long[] shape) {
        long bytes = Shapes.byteSize(dtype, shape);
        if (bytes < thresholdBytes) {
            return Tensors.allocate(dtype, shape);
        }
        Arena arena = Arena.ofShared();
        Path file = null;
        try {
            Files.createDirectories(dir);
            file = Files.createTempFile(dir, ".moeflux-spill-", ".bin");
            MemorySegment seg;
            try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
                ch.truncate(bytes);
                ch.write(java.nio.ByteBuffer.allocate(1), bytes - 1);
                seg = ch.map(FileChannel.MapMode.READ_WRITE, 0, bytes, arena);
            }
            Files.delete(file);
            return new DenseTensor(dtype, shape, seg, arena::close);
        } catch (IOException e) {
            arena.close();
            deleteQuietly(file);
            throw new UncheckedIOException("cannot spill a " + bytes + "-byte tensor to " + dir, e);
        } catch (RuntimeException e) {
            arena.close();
            deleteQuietly(file);
            throw e;
        }
    }

    /**
     * The bytes of a lazily computed tensor (a merged expert tensor, say) made concrete here, so they
     * can be sliced; the argument is not released.
     */
    public DenseTensor materialize(Tensor t) throws IOException {
        return Tensors.copyInto(t, allocate(t.dtype(), t.shape()));
    }

    private static void deleteQuietly(Path file) {
        if (file != null) {
            try {
                Files.deleteIfExists(file);
            } catch (IOException ignored) {
                // Only reached after a failure that is already being reported.
            }
        }
    }
}
