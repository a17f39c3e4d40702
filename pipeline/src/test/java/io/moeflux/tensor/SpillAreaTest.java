package io.moeflux.tensor;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.testing.TensorBytes;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SpillAreaTest {
    @TempDir
    Path dir;

    @Test
    void largeTensorsLiveInUnlinkedMappedFilesAndSmallOnesInMemory() throws Exception {
        SpillArea area = SpillArea.in(dir, 4096);
        DenseTensor big = area.allocate(DType.BF16, new long[] {64, 64});
        DenseTensor small = area.allocate(DType.BF16, new long[] {4});
        big.data().set(ValueLayout.JAVA_SHORT_UNALIGNED, 8190, (short) 7);
        assertThat(TensorBytes.of(big)[8190]).isEqualTo((byte) 7);
        try (var files = Files.list(dir)) {
            assertThat(files.toList()).as("spill files are unlinked once mapped").isEmpty();
        }
        big.release();
        small.release();
    }
}
