package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Inputs that once converted to an empty or partial checkpoint with exit 0: each is bad input, refused
 * with exit 3 and one line naming the file, and nothing is written.
 */
class SilentlyEmptyInputTest {
    private static final String INDEX = "model.safetensors.index.json";

    @TempDir
    Path dir;

    private Path copyOfTinyHf() throws IOException {
        return Cli.copyOfTinyHf(dir.resolve("hf"));
    }

    /** from-hf of {@code in} is refused as bad input, in one line containing {@code named}, and writes nothing. */
    private void assertRefused(Path in, String named, String why) throws IOException {
        Path out = dir.resolve("out");
        Cli r = Cli.run("from-hf", in, out);
        assertThat(r.exitCode()).as(r.err()).isEqualTo(ExitCodes.BAD_INPUT);
        assertThat(r.err().lines()).singleElement().asString().contains(named).contains(why);
        assertThat(out).doesNotExist();
        try (Stream<Path> left = Files.list(dir)) {
            assertThat(left.map(p -> p.getFileName().toString())).noneMatch(n -> n.contains(".partial-"));
        }
    }

    @Test
    void anIndexWhoseWeightMapIsEmptyBesideRealShardsIsRefused() throws IOException {
        Path in = copyOfTinyHf();
        Files.writeString(in.resolve(INDEX), "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {}}");
        assertRefused(in, INDEX, "names no tensors");
    }

    @Test
    void aShardTheIndexDoesNotNameIsRefusedNotLeftOut() throws IOException {
        Path in = copyOfTinyHf();
        Files.copy(in.resolve("model-00002-of-00003.safetensors"), in.resolve("model-extra.safetensors"));
        assertRefused(in, "model-extra.safetensors", "does not name");
    }

    @Test
    void anIndexThatIsAFolderIsRefused() throws IOException {
        Path in = copyOfTinyHf();
        Files.delete(in.resolve(INDEX));
        Files.createDirectory(in.resolve(INDEX));
        assertRefused(in, INDEX, "not a file");
    }

    @Test
    void aTotalSizeThatIsNotANumberIsRefused() throws IOException {
        Path in = copyOfTinyHf();
        String index = Files.readString(in.resolve(INDEX));
        Files.writeString(in.resolve(INDEX), index.replaceFirst("\"total_size\":\\s*\\d+", "\"total_size\": \"136160 bytes\""));
        assertRefused(in, INDEX, "total_size");
    }

    @Test
    void aFileWithAnEmptyHeaderIsRefused() throws IOException {
        byte[] header = "{}      ".getBytes(StandardCharsets.US_ASCII);
        Path file = dir.resolve("empty.safetensors");
        Files.write(file, ByteBuffer.allocate(8 + header.length).order(ByteOrder.LITTLE_ENDIAN)
                .putLong(header.length).put(header).array());
        assertRefused(file, "empty.safetensors", "holds no tensors");
    }
}
