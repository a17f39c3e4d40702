package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Model facts are checked against the tensors before anything is written, and a checkpoint in which
 * nothing matches the direction is refused rather than passed through as a successful no-op.
 */
class ModelFactsTest {
    private static final Path TINY_HF = Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf");
    private static final Path TINY_NATIVE = Cli.REFERENCE_VECTORS.resolve("hy3-tiny/native");
    private static final String FIRST_EXPERT = "model.layers.1.mlp.experts.0.";

    @TempDir
    Path dir;

    private void assertRefused(Cli r, String... contained) throws IOException {
        assertThat(r.exitCode()).as(r.err()).isEqualTo(ExitCodes.BAD_INPUT);
        assertThat(r.err().lines()).singleElement().asString().contains(contained);
        try (Stream<Path> left = Files.list(dir)) {
            assertThat(left.map(p -> p.getFileName().toString())).noneMatch(n -> n.startsWith("out") || n.contains(".partial-"));
        }
    }

    @Test
    void anExpertWidthUnlikeTheConfigsIsRefusedBeforeAnythingIsWritten() throws IOException {
        Path in = Cli.copyOfTinyHf(dir.resolve("hf"));
        String config = Files.readString(in.resolve("config.json"));
        Files.writeString(in.resolve("config.json"), config.replaceFirst("\"moe_intermediate_size\":\\s*16", "\"moe_intermediate_size\": 24"));

        assertRefused(Cli.run("from-hf", in, dir.resolve("out")), FIRST_EXPERT, "moe_intermediate_size is 24");
    }

    @Test
    void aHiddenSizeFlagUnlikeTheExpertWeightsIsRefused() throws IOException {
        assertRefused(Cli.run("from-hf", TINY_HF, dir.resolve("out"), "--hidden-size", "48"), FIRST_EXPERT, "hidden_size is 48");
    }

    @Test
    void toHfOfAnOnDiskCheckpointSaysNothingMatchedUnlessAllowed() throws IOException {
        assertRefused(Cli.run("to-hf", TINY_HF, dir.resolve("out")), "to-hf: no tensor is a grouped expert tensor", "--allow-no-experts");
        assertRefused(Cli.run("to-hf", TINY_HF, dir.resolve("out"), "--per-tensor"), "to-hf: no tensor is a grouped expert tensor");

        Cli allowed = Cli.run("to-hf", TINY_HF, dir.resolve("out"), "--allow-no-experts");
        assertThat(allowed.exitCode()).as(allowed.err()).isZero();
    }

    @Test
    void fromHfOfANativeCheckpointSaysNothingMatchedUnlessAllowed() throws IOException {
        assertRefused(Cli.run("from-hf", TINY_NATIVE, dir.resolve("out")), "from-hf: no tensor is a per-expert weight",
                "--allow-no-experts");

        Cli allowed = Cli.run("from-hf", TINY_NATIVE, dir.resolve("out"), "--allow-no-experts");
        assertThat(allowed.exitCode()).as(allowed.err()).isZero();
    }
}
