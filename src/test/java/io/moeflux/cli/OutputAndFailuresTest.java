package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.connect.safetensors.SafetensorsSink;
import io.moeflux.connect.safetensors.SafetensorsSinkOptions;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.Stages;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class OutputAndFailuresTest {
    private static final Path TINY_HF = Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf");

    @TempDir
    Path dir;

    @Test
    void nonEmptyOutputIsRefusedAndLeftAlone() throws Exception {
        Path out = Files.createDirectories(dir.resolve("out"));
        Files.writeString(out.resolve("keep.txt"), "precious");
        Cli r = Cli.run("from-hf", TINY_HF, out);
        assertThat(r.exitCode()).isEqualTo(ExitCodes.OUTPUT_EXISTS);
        assertThat(r.err().strip()).contains("--force").doesNotContain("\n");
        assertThat(Files.readString(out.resolve("keep.txt"))).isEqualTo("precious");
        assertThat(Files.list(out)).hasSize(1);
    }

    @Test
    void forceReplacesANonEmptyOutput() throws Exception {
        Path out = Files.createDirectories(dir.resolve("out"));
        Files.writeString(out.resolve("old.txt"), "old");
        Cli r = Cli.run("from-hf", TINY_HF, out, "--force");
        assertThat(r.exitCode()).as(r.err()).isZero();
        assertThat(out.resolve("old.txt")).doesNotExist();
        assertThat(Cli.run("verify", out, Cli.REFERENCE_VECTORS.resolve("hy3-tiny/native")).exitCode()).isZero();
    }

    @Test
    void anEmptyOutputFolderIsFine() throws Exception {
        Path out = Files.createDirectories(dir.resolve("out"));
        assertThat(Cli.run("from-hf", TINY_HF, out).exitCode()).isZero();
    }

    @Test
    void anOutputThatCannotBeCreatedIsAnIoFailure() throws Exception {
        Path file = Files.writeString(dir.resolve("a-file"), "x");
        Cli r = Cli.run("from-hf", TINY_HF, file.resolve("out"));
        assertThat(r.exitCode()).isEqualTo(ExitCodes.IO_FAILURE);
        assertThat(r.err().strip()).contains("a-file").doesNotContain("\n");
    }

    @Test
    void missingInputIsAnIoFailure() {
        Cli r = Cli.run("from-hf", dir.resolve("nothing-here"), dir.resolve("out"));
        assertThat(r.exitCode()).isEqualTo(ExitCodes.IO_FAILURE);
        assertThat(r.err()).contains("nothing-here").doesNotContain("at io.moeflux");
    }

    @Test
    void aFileThatIsNotSafetensorsIsBadInput() throws Exception {
        Path junk = Files.writeString(dir.resolve("model.safetensors"), "this is not a checkpoint");
        Cli r = Cli.run("inspect", junk);
        assertThat(r.exitCode()).isEqualTo(ExitCodes.BAD_INPUT);
        assertThat(r.err().strip()).startsWith("moeflux inspect: ").contains("model.safetensors").doesNotContain("\n");
    }

    @Test
    void debugAddsTheStackTrace() throws Exception {
        Path junk = Files.writeString(dir.resolve("model.safetensors"), "this is not a checkpoint");
        Cli r = Cli.run("inspect", junk, "--debug");
        assertThat(r.exitCode()).isEqualTo(ExitCodes.BAD_INPUT);
        assertThat(r.err()).contains("at io.moeflux");
    }

    @Test
    void missingExpertsFailBeforeAnythingIsWrittenNamingTheFirstMissingKeys() {
        Path in = dir.resolve("incomplete");
        String dropped = "model.layers.2.mlp.experts.5.up_proj.weight";
        SyntheticHy3 tiny = new SyntheticHy3(SyntheticHy3.Preset.TINY.spec);
        SafetensorsSink.create(SafetensorsSinkOptions.to(in))
                .write(new CheckpointDescriptor(Optional.empty(), tiny.describe().block().configJson()),
                        tiny.tensors().transform(Stages.filter(key -> !key.equals(dropped))))
                .block();

        Path out = dir.resolve("out");
        Cli r = Cli.run("from-hf", in, out);
        assertThat(r.exitCode()).isEqualTo(ExitCodes.BAD_INPUT);
        assertThat(r.err()).contains(dropped).contains(": 1/");
        assertThat(out).doesNotExist();
    }

    @Test
    void badConfigJsonIsBadInput() throws Exception {
        Path in = dir.resolve("in");
        assertThat(Cli.run("generate", in).exitCode()).isZero();
        Files.writeString(in.resolve("config.json"), "{\"num_experts\": \"many\"}");
        Cli r = Cli.run("from-hf", in, dir.resolve("out"));
        assertThat(r.exitCode()).isEqualTo(ExitCodes.BAD_INPUT);
        assertThat(r.err()).contains("num_experts");
    }

    @Test
    void copyKeepsEveryTensorAndReshards() {
        Path out = dir.resolve("copy");
        Cli r = Cli.run("copy", TINY_HF, out, "--max-shard-size", "50kB", "--json");
        assertThat(r.exitCode()).as(r.err()).isZero();
        assertThat(r.json().get("files").asInt()).isGreaterThan(1);
        assertThat(out.resolve("model.safetensors.index.json")).exists();
        assertThat(Cli.run("verify", out, TINY_HF).exitCode()).isZero();
    }

    /** A private copy of the reference input, so that a command that wrongly replaced it would be seen. */
    private Path copyOfTinyHf(Path to) throws Exception {
        return Cli.copyOfTinyHf(to);
    }

    @Test
    void anOutputThatIsHoldsOrLiesInsideTheInputIsRefusedAndTheInputKept() throws Exception {
        Path parent = Files.createDirectories(dir.resolve("parent"));
        Path in = copyOfTinyHf(parent.resolve("hf"));
        Files.createSymbolicLink(dir.resolve("alias"), in);
        Object[][] calls = {
            {"copy", in, parent, "--force"},
            {"from-hf", in, in, "--force"},
            {"from-hf", in, dir.resolve("alias"), "--force"},
            {"to-hf", in, in.resolve("sub")},
            {"from-hf", in.resolve("model-00001-of-00003.safetensors"), in, "--force"},
        };
        for (Object[] call : calls) {
            Cli r = Cli.run(call);
            assertThat(r.exitCode()).as(String.valueOf(java.util.Arrays.asList(call))).isEqualTo(ExitCodes.USAGE);
            assertThat(r.err().strip()).containsPattern("the output .* (is|contains|is inside) the input").doesNotContain("\n");
        }
        assertThat(in.resolve("sub")).doesNotExist();
        assertThat(Cli.run("verify", in, TINY_HF).exitCode()).as("the input is untouched").isEqualTo(ExitCodes.OK);
    }
}
