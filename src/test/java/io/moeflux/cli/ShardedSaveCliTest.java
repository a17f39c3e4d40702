package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.connect.safetensors.Manifests;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A sharded (DCP) save through the CLI: consolidated by copy, converted by from-hf, refused when torn. */
class ShardedSaveCliTest {
    private static final Path SAVE = Cli.REFERENCE_VECTORS.resolve("hy3-tiny-dcp/sharded");
    private static final ObjectMapper JSON = new ObjectMapper();

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
    void copyFollowsTheSavesFileMappingIntoTheReferenceFilesAndIndex() throws Exception {
        Path save = saveWithMapping();
        Path out = dir.resolve("hf");
        Cli copy = Cli.run("copy", save, out);
        assertThat(copy.exitCode()).as(copy.err()).isEqualTo(ExitCodes.OK);
        Path reference = Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf");
        assertThat(Manifests.of(out)).isEqualTo(Manifests.of(reference));
        assertThat(fileNames(out)).isEqualTo(fileNames(reference))
                .contains("model-00001-of-00003.safetensors", "model.safetensors.index.json");
        assertThat(JSON.readTree(out.resolve("model.safetensors.index.json").toFile()).get("weight_map"))
                .isEqualTo(JSON.readTree(reference.resolve("model.safetensors.index.json").toFile()).get("weight_map"));
    }

    @Test
    void aGivenShardSizeOverridesTheSavesFileMapping() throws Exception {
        Path out = dir.resolve("hf");
        Cli copy = Cli.run("copy", saveWithMapping(), out, "--max-shard-size", "1GB");
        assertThat(copy.exitCode()).as(copy.err()).isEqualTo(ExitCodes.OK);
        assertThat(fileNames(out)).containsExactly("config.json", "model.safetensors");
    }

    @Test
    void aMappingThatNamesATensorNoRankSavedIsBadInput() throws Exception {
        Path save = saveWithMapping();
        Path mapping = save.resolve(".hf_metadata/fqn_to_file_index_mapping.json");
        ObjectNode map = (ObjectNode) JSON.readTree(mapping.toFile());
        map.put("model.layers.9.mlp.gate.weight", 2);
        JSON.writeValue(mapping.toFile(), map);
        Path out = dir.resolve("hf");
        Cli copy = Cli.run("copy", save, out);
        assertThat(copy.exitCode()).isEqualTo(ExitCodes.BAD_INPUT);
        assertThat(copy.err()).contains("fqn_to_file_index_mapping.json names tensor model.layers.9.mlp.gate.weight, "
                + "which no file of the save holds");
        assertThat(out).doesNotExist();
    }

    /** The reference save with the mapping NeMo Automodel writes beside it: the file number of each tensor in hy3-tiny/hf. */
    private Path saveWithMapping() throws Exception {
        Path save = dir.resolve("save");
        Files.createDirectories(save.resolve(".hf_metadata"));
        try (var files = Files.list(SAVE)) {
            for (Path f : files.filter(Files::isRegularFile).toList()) {
                Files.copy(f, save.resolve(f.getFileName()));
            }
        }
        Files.copy(SAVE.resolve(".hf_metadata/config.json"), save.resolve(".hf_metadata/config.json"));
        ObjectNode mapping = JSON.createObjectNode();
        JSON.readTree(Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf/model.safetensors.index.json").toFile()).get("weight_map")
                .fields().forEachRemaining(f -> mapping.put(f.getKey(),
                        Integer.parseInt(f.getValue().asText().replaceAll("model-0*(\\d+)-of-.*", "$1"))));
        JSON.writerWithDefaultPrettyPrinter().writeValue(save.resolve(".hf_metadata/fqn_to_file_index_mapping.json").toFile(), mapping);
        return save;
    }

    private static List<String> fileNames(Path folder) throws Exception {
        try (var files = Files.list(folder)) {
            return files.map(f -> f.getFileName().toString()).sorted().toList();
        }
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
    void verifyComparesTheWholeTensorsASaveMakesWithAConsolidatedCheckpoint() {
        Cli verify = Cli.run("verify", SAVE, Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf"));
        assertThat(verify.exitCode()).as(verify.err()).isEqualTo(ExitCodes.OK);
        assertThat(verify.out()).contains("identical: 129 tensors");
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
