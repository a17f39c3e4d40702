package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.connect.safetensors.Manifests;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A sharded (DCP) save through the CLI: consolidated by copy, converted by from-hf, refused when torn. */
class ShardedSaveCliTest {
    private static final Path SAVE = Cli.REFERENCE_VECTORS.resolve("hy3-tiny-dcp/sharded");

    @TempDir
    Path dir;

    @Test
    void copyConsolidatesTheFourRankReferenceSaveIntoHy3TinyBitForBit() throws Exception {
        Path out = dir.resolve("hf");
        Cli copy = Cli.run("copy", SAVE, out);
        assertThat(copy.exitCode()).as(copy.err()).isEqualTo(ExitCodes.OK);
        assertThat(Manifests.of(out)).isEqualTo(Manifests.of(Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf")));
        assertThat(out.resolve("config.json")).exists();
    }

    @Test
    void fromHfOfTheReferenceSaveGivesHy3TinyNativeWithTheModelFactsOfItsHfMetadata() throws Exception {
        Path out = dir.resolve("native");
        Cli convert = Cli.run("from-hf", SAVE, out);
        assertThat(convert.exitCode()).as(convert.err()).isEqualTo(ExitCodes.OK);
        assertThat(Manifests.of(out)).isEqualTo(Manifests.of(Cli.REFERENCE_VECTORS.resolve("hy3-tiny/native")));
    }

    @Test
    void inspectListsTheWholeTensorsOfASave() {
        Cli inspect = Cli.run("inspect", SAVE, "--totals");
        Cli whole = Cli.run("inspect", Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf"), "--totals");
        assertThat(inspect.exitCode()).isEqualTo(ExitCodes.OK);
        // The same totals; only the closing line, which names the path, differs.
        assertThat(inspect.out().lines().filter(l -> !l.contains("reference-vectors")).toList())
                .isEqualTo(whole.out().lines().filter(l -> !l.contains("reference-vectors")).toList())
                .contains("BF16                123            132,992");
        assertThat(inspect.out()).contains("129 tensors, 136,160 bytes");
    }

    @Test
    void verifyOfASaveIsRefusedAsBadInputUntilItIsConsolidated() {
        Cli verify = Cli.run("verify", SAVE, Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf"));
        assertThat(verify.exitCode()).isEqualTo(ExitCodes.BAD_INPUT);
        assertThat(verify.err()).contains("arrives in pieces").contains("consolidate the save with copy first");
    }

    @Test
    void aTornSaveIsBadInputNamingTheTensorAndLeavesNoOutput() throws Exception {
        Path torn = dir.resolve("torn");
        Files.createDirectories(torn);
        for (int rank = 1; rank <= 3; rank++) {
            String name = String.format("shard-%05d-model-00001-of-00001.safetensors", rank);
            Files.copy(SAVE.resolve(name), torn.resolve(name));
        }
        Path out = dir.resolve("out");
        Cli copy = Cli.run("copy", torn, out);
        assertThat(copy.exitCode()).isEqualTo(ExitCodes.BAD_INPUT);
        assertThat(copy.err().strip()).doesNotContain("\n").contains("tensor ").contains("is in no shard file");
        assertThat(out).doesNotExist();
    }
}
