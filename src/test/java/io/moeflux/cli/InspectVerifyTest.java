package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class InspectVerifyTest {
    private static final Path TINY_HF = Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf");

    @TempDir
    Path dir;

    @Test
    void inspectListsEveryTensorAndTotalsPerLayer() {
        Cli r = Cli.run("inspect", TINY_HF);
        assertThat(r.exitCode()).isZero();
        assertThat(r.out())
                .containsPattern("model\\.layers\\.1\\.mlp\\.router\\.gate\\.weight\\s+F32\\s+\\[8, 32\\]\\s+1,024")
                .containsPattern("layers\\.3\\s+41\\s")
                .containsPattern("\\(no layer\\)\\s+3\\s")
                .contains("129 tensors, 136,160 bytes");
    }

    @Test
    void inspectJsonHasTensorsLayersAndTotals() {
        Cli r = Cli.run("inspect", TINY_HF, "--json");
        assertThat(r.exitCode()).isZero();
        JsonNode json = r.json();
        assertThat(json.get("tensors")).hasSize(129);
        JsonNode first = json.get("tensors").get(0);
        assertThat(first.get("name").asText()).isEqualTo("lm_head.weight");
        assertThat(first.get("dtype").asText()).isEqualTo("BF16");
        assertThat(first.get("shape").toString()).isEqualTo("[64,32]");
        assertThat(first.get("bytes").asLong()).isEqualTo(64 * 32 * 2);
        assertThat(json.get("layers")).hasSize(4);
        assertThat(json.get("layers").get(0).get("tensors").asLong()).isEqualTo(11);
        assertThat(json.get("total").get("tensors").asLong()).isEqualTo(129);
        assertThat(json.get("total").get("bytes").asLong()).isEqualTo(136_160);
        assertThat(json.get("dtypes").get("F32").get("tensors").asLong()).isEqualTo(6);
    }

    @Test
    void inspectTotalsLeavesOutTheTensorList() {
        Cli r = Cli.run("inspect", TINY_HF, "--totals", "--json");
        assertThat(r.json().has("tensors")).isFalse();
        assertThat(r.json().get("total").get("tensors").asLong()).isEqualTo(129);
    }

    @Test
    void verifyOfACheckpointWithItselfIsIdentical() {
        Cli r = Cli.run("verify", TINY_HF, TINY_HF);
        assertThat(r.exitCode()).isEqualTo(ExitCodes.OK);
        assertThat(r.out()).contains("identical: 129 tensors, 136,160 bytes");
    }

    @Test
    void verifyReportsDifferentBytesWithTheirOffsetAndExits1() {
        Path a = dir.resolve("a");
        Path b = dir.resolve("b");
        assertThat(Cli.run("generate", a, "--seed", "1").exitCode()).isZero();
        assertThat(Cli.run("generate", b, "--seed", "2").exitCode()).isZero();
        Cli r = Cli.run("verify", a, b, "--json");
        assertThat(r.exitCode()).isEqualTo(ExitCodes.DIFFERENT);
        JsonNode json = r.json();
        assertThat(json.get("identical").asBoolean()).isFalse();
        assertThat(json.get("differences")).hasSize(129);
        assertThat(json.get("differences").get(0).get("kind").asText()).isEqualTo("bytes");
        assertThat(json.get("differences").get(0).get("detail").asText()).startsWith("first at byte ");
    }

    @Test
    void verifyReportsMissingTensorsAndShapeChanges() {
        Path small = dir.resolve("small");
        assertThat(Cli.run("generate", small, "--experts", "4").exitCode()).isZero();
        Cli r = Cli.run("verify", TINY_HF, small);
        assertThat(r.exitCode()).isEqualTo(ExitCodes.DIFFERENT);
        assertThat(r.out())
                .contains("only in A: model.layers.1.mlp.experts.7.down_proj.weight")
                .contains("shape differs: model.layers.1.mlp.router.gate.weight (A [8, 32], B [4, 32])");
    }

    @Test
    void verifyCanIgnoreKeys() {
        Path roundTrip = dir.resolve("rt");
        Path nativeDir = dir.resolve("native");
        assertThat(Cli.run("from-hf", TINY_HF, nativeDir).exitCode()).isZero();
        assertThat(Cli.run("to-hf", nativeDir, roundTrip).exitCode()).isZero();
        assertThat(Cli.run("verify", TINY_HF, roundTrip).exitCode()).isEqualTo(ExitCodes.DIFFERENT);
        Cli r = Cli.run("verify", TINY_HF, roundTrip, "--ignore-key-regex", "model\\.layers\\.3\\.");
        assertThat(r.exitCode()).as(r.out()).isEqualTo(ExitCodes.OK);
        assertThat(r.out()).contains("identical: 88 tensors");
    }

    /** A name that would clear the screen, forge a line and reverse the text after it if printed raw. */
    private static final String HOSTILE_NAME = "evil\u001b[2J\nforged line\u202e\u0000.weight";

    /** One U8 tensor named {@code name} holding {@code data}. */
    private static void writeSafetensors(Path file, String name, byte[] data) throws IOException {
        byte[] header = new ObjectMapper().writeValueAsBytes(Map.of(name,
                Map.of("dtype", "U8", "shape", new long[] {data.length}, "data_offsets", new long[] {0, data.length})));
        int padded = (header.length + 7) / 8 * 8;
        ByteBuffer b = ByteBuffer.allocate(8 + padded + data.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(padded).put(header);
        for (int i = header.length; i < padded; i++) {
            b.put((byte) ' ');
        }
        b.put(data);
        Files.write(file, b.array());
    }

    @Test
    void controlCharactersInTensorNamesArePrintedEscapedNeverRaw() throws IOException {
        Path a = dir.resolve("a.safetensors");
        Path b = dir.resolve("b.safetensors");
        writeSafetensors(a, HOSTILE_NAME, new byte[] {1, 2});
        writeSafetensors(b, HOSTILE_NAME, new byte[] {1, 3});
        String escaped = "evil\\e[2J\\nforged line\\u202e\\x00.weight";

        Cli inspect = Cli.run("inspect", a);
        Cli verify = Cli.run("verify", a, b);

        assertThat(inspect.exitCode()).isZero();
        assertThat(inspect.out()).contains(escaped).doesNotContain("\u001b", "\u202e", "\u0000")
                .doesNotContainPattern("(?m)^forged line");
        assertThat(verify.exitCode()).isEqualTo(ExitCodes.DIFFERENT);
        assertThat(verify.out()).contains(escaped).doesNotContain("\u001b", "\u202e", "\u0000")
                .doesNotContainPattern("(?m)^forged line");
        // JSON carries the name itself, escaped by JSON's rules.
        assertThat(Cli.run("inspect", a, "--json").json().get("tensors").get(0).get("name").asText()).isEqualTo(HOSTILE_NAME);
    }

    @Test
    void anErrorNamingAHostileTensorIsOneEscapedLine() throws IOException {
        Path in = dir.resolve("in.safetensors");
        String grouped = "model.layers.\u001b[2J\n1.mlp.experts.gate_and_up_projs";
        writeSafetensors(in, grouped, new byte[] {1, 2});

        Cli r = Cli.run("to-hf", in, dir.resolve("out"), "--num-experts", "8", "--moe-intermediate-size", "16");

        assertThat(r.exitCode()).isEqualTo(ExitCodes.BAD_INPUT);
        assertThat(r.err().lines()).singleElement().asString().contains("model.layers.\\e[2J\\n1.mlp.experts")
                .doesNotContain("\u001b");
    }
}
