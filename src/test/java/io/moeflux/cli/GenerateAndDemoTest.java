package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class GenerateAndDemoTest {
    @TempDir
    Path dir;

    @Test
    void tinyHasTheKeysDtypesAndShapesOfTheReferenceVector() {
        Path out = dir.resolve("tiny");
        assertThat(Cli.run("generate", out).exitCode()).isZero();
        Path reference = Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf");
        assertThat(Cli.run("inspect", out, "--json").json().get("tensors"))
                .isEqualTo(Cli.run("inspect", reference, "--json").json().get("tensors"));
    }

    @Test
    void hy3KeysHasTheRealCheckpointsTensorCount() throws Exception {
        Path out = dir.resolve("keys");
        Cli generate = Cli.run("generate", out, "--preset", "hy3-keys", "--json");
        assertThat(generate.exitCode()).as(generate.err()).isZero();
        assertThat(generate.json().get("tensors").asLong()).isEqualTo(47_138);

        var inspect = Cli.run("inspect", out, "--totals", "--json").json();
        assertThat(inspect.get("total").get("tensors").asLong()).isEqualTo(47_138);
        assertThat(inspect.get("layers")).hasSize(81);
        // 79 MoE layers of 589 tensors, and the MTP layer 80 with its four extra tensors.
        assertThat(inspect.get("layers").get(1).get("tensors").asLong()).isEqualTo(589);
        assertThat(inspect.get("layers").get(80).get("tensors").asLong()).isEqualTo(593);
        assertThat(Files.readString(out.resolve("config.json")))
                .contains("\"num_hidden_layers\" : 80").contains("\"num_experts\" : 192");

        Cli convert = Cli.run("from-hf", out, dir.resolve("native"), "--json");
        assertThat(convert.exitCode()).as(convert.err()).isZero();
        // Per MoE layer: 576 expert weights become 2 grouped tensors; the MTP layer goes.
        assertThat(convert.json().get("tensors").asLong()).isEqualTo(47_138 - 593 - 79 * 574);
    }

    @Test
    void sameSeedGivesTheSameBytesAndFlagsOverrideThePreset() {
        Path a = dir.resolve("a");
        Path b = dir.resolve("b");
        assertThat(Cli.run("generate", a, "--layers", "2", "--experts", "3", "--seed", "7").exitCode()).isZero();
        assertThat(Cli.run("generate", b, "--layers", "2", "--experts", "3", "--seed", "7", "--max-shard-size", "10kB")
                .exitCode()).isZero();
        Cli verify = Cli.run("verify", a, b);
        assertThat(verify.exitCode()).isZero();
        // 3 outside layers, 11 in the dense layer 0, 13 + 9 in MoE layer 1, 13 + 9 + 4 in the MTP layer 2.
        assertThat(verify.out()).contains("identical: 62 tensors");
    }

    @Test
    void generateRefusesANonEmptyOutput() throws Exception {
        Path out = Files.createDirectories(dir.resolve("out"));
        Files.writeString(out.resolve("x"), "x");
        assertThat(Cli.run("generate", out).exitCode()).isEqualTo(ExitCodes.OUTPUT_EXISTS);
    }

    @Test
    void demoRoundTripsBitExactAndCleansUp() throws Exception {
        long before;
        try (var s = Files.list(Path.of(System.getProperty("java.io.tmpdir")))) {
            before = s.filter(p -> p.getFileName().toString().startsWith("moeflux-demo-")).count();
        }
        Cli r = Cli.run("demo");
        assertThat(r.exitCode()).as(r.err()).isEqualTo(ExitCodes.OK);
        assertThat(r.out()).contains("generate").contains("from-hf").contains("to-hf")
                .contains("round trip: bit-exact (88 tensors");
        try (var s = Files.list(Path.of(System.getProperty("java.io.tmpdir")))) {
            assertThat(s.filter(p -> p.getFileName().toString().startsWith("moeflux-demo-")).count()).isEqualTo(before);
        }
    }

    @Test
    void demoKeepsItsCheckpointsWhenAsked() {
        Path keep = dir.resolve("demo");
        assertThat(Cli.run("demo", "--keep", keep).exitCode()).isZero();
        assertThat(keep.resolve("hf/config.json")).exists();
        assertThat(keep.resolve("native/model.safetensors")).exists();
        assertThat(keep.resolve("hf-roundtrip/model.safetensors")).exists();
    }
}
