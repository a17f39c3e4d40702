package io.moeflux.connect.safetensors;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.moeflux.connect.InsufficientSpaceException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class PreallocationTest {
    @TempDir
    Path dir;

    @Test
    void aReservedFileHasItsSizeAndItsBlocksBeforeAnythingIsWritten() throws Exception {
        Path file = Files.createFile(dir.resolve("shard.safetensors"));
        long bytes = (3 << 20) + 5;

        boolean reserved = Preallocation.reserve(file, bytes);
        assumeTrue(reserved, "this file system does not support fallocate");

        assertThat(Files.size(file)).isEqualTo(bytes);
        assertThat(allocatedBytes(file)).isGreaterThanOrEqualTo(bytes);
        assertThat(Files.readAllBytes(file)).containsOnly(0);
    }

    @Test
    void aFileLargerThanTheFreeSpaceIsRefusedNamingItAndItsSize() throws Exception {
        Path file = Files.createFile(dir.resolve("huge.safetensors"));
        long bytes = 1L << 50;
        assumeTrue(Files.getFileStore(file).getUsableSpace() < bytes);

        assertThatThrownBy(() -> Preallocation.reserve(file, bytes))
                .isInstanceOf(InsufficientSpaceException.class)
                .hasMessageContaining(file.toString()).hasMessageContaining("no room for its " + bytes + " bytes");
        assertThat(Files.size(file)).isZero();
    }

    @Test
    void nothingIsReservedForAnEmptyFile() throws Exception {
        Path file = Files.createFile(dir.resolve("empty.safetensors"));

        assertThat(Preallocation.reserve(file, 0)).isFalse();
        assertThat(Files.size(file)).isZero();
    }

    /** {@code st_blocks} in bytes, which Java's file attributes do not give. */
    private static long allocatedBytes(Path file) throws Exception {
        Process stat = new ProcessBuilder("stat", "-c", "%b %B", file.toString()).redirectErrorStream(true).start();
        String[] out = new String(stat.getInputStream().readAllBytes()).trim().split(" ");
        assertThat(stat.waitFor()).isZero();
        return Long.parseLong(out[0]) * Long.parseLong(out[1]);
    }
}
