package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Expert LoRA adapters through the CLI: the reference's own vectors, and the inputs it would lose data of. */
class LoraConversionTest {
    private static final Path LORA_HF = Cli.REFERENCE_VECTORS.resolve("hy3-lora-hf/hf");
    private static final Path LORA_HF_EXPECTED = Cli.REFERENCE_VECTORS.resolve("hy3-lora-hf/native");
    private static final Path LORA_NATIVE = Cli.REFERENCE_VECTORS.resolve("hy3-lora-native/native");
    private static final Path LORA_NATIVE_EXPECTED = Cli.REFERENCE_VECTORS.resolve("hy3-lora-native/hf");

    @TempDir
    Path dir;

    @Test
    void fromHfOfPerExpertAndParamWrapperLayersEqualsTheReference() {
        Path out = dir.resolve("native");
        Cli convert = Cli.run("from-hf", LORA_HF, out);
        assertThat(convert.exitCode()).as(convert.err()).isEqualTo(ExitCodes.OK);
        Cli verify = Cli.run("verify", out, LORA_HF_EXPECTED);
        assertThat(verify.exitCode()).as(verify.out()).isEqualTo(ExitCodes.OK);
        assertThat(verify.out()).contains("identical: 54 tensors");
    }

    @Test
    void toHfAndPerTensorToHfEqualTheReference() {
        for (String mode : new String[] {"stream", "--per-tensor"}) {
            Path out = dir.resolve(mode);
            Cli convert = mode.equals("stream") ? Cli.run("to-hf", LORA_NATIVE, out) : Cli.run("to-hf", LORA_NATIVE, out, mode);
            assertThat(convert.exitCode()).as(convert.err()).isEqualTo(ExitCodes.OK);
            Cli verify = Cli.run("verify", out, LORA_NATIVE_EXPECTED);
            assertThat(verify.exitCode()).as(mode + ": " + verify.out()).isEqualTo(ExitCodes.OK);
            assertThat(verify.out()).contains("identical: 150 tensors");
        }
    }

    @Test
    void theReferenceVectorsRoundTripThroughBothDirections() {
        Path hf = dir.resolve("hf");
        Path back = dir.resolve("back");
        assertThat(Cli.run("to-hf", LORA_HF_EXPECTED, hf).exitCode()).isZero();
        assertThat(Cli.run("from-hf", hf, back).exitCode()).isZero();
        assertThat(Cli.run("verify", back, LORA_HF_EXPECTED).exitCode()).isEqualTo(ExitCodes.OK);
    }

    /** Layer 1 of a 6-expert model whose up_proj LoRA lacks expert 5 while gate_proj's and down_proj's are complete. */
    private Path tornAdapter() throws IOException {
        Path in = dir.resolve("torn");
        Files.createDirectories(in);
        Files.copy(LORA_HF.resolve("config.json"), in.resolve("config.json"));
        Map<String, long[]> tensors = new LinkedHashMap<>();
        for (int e = 0; e < 6; e++) {
            String p = "model.layers.1.mlp.experts." + e + ".";
            tensors.put(p + "gate_proj.lora_A.weight", new long[] {2, 48});
            tensors.put(p + "gate_proj.lora_B.weight", new long[] {8, 2});
            tensors.put(p + "down_proj.lora_A.weight", new long[] {2, 8});
            tensors.put(p + "down_proj.lora_B.weight", new long[] {48, 2});
            if (e < 5) {
                tensors.put(p + "up_proj.lora_A.weight", new long[] {2, 48});
                tensors.put(p + "up_proj.lora_B.weight", new long[] {8, 2});
            }
        }
        writeBf16(in.resolve("model.safetensors"), tensors);
        return in;
    }

    @Test
    void aTornAdapterIsRefusedWithExit3AndNoOutput() throws IOException {
        Path out = dir.resolve("out");
        Cli convert = Cli.run("from-hf", tornAdapter(), out);
        assertThat(convert.exitCode()).isEqualTo(ExitCodes.BAD_INPUT);
        assertThat(convert.err()).contains("expert LoRA is torn")
                .contains("model.layers.1.mlp.experts.5.up_proj.lora_A.weight").contains("--lossy-lora")
                .doesNotContain("Exception");
        assertThat(out).doesNotExist();
    }

    @Test
    void lossyLoraConvertsTheTornAdapterAsTheReferenceDoes() throws IOException {
        Path out = dir.resolve("out");
        Cli convert = Cli.run("from-hf", tornAdapter(), out, "--lossy-lora");
        assertThat(convert.exitCode()).as(convert.err()).isEqualTo(ExitCodes.OK);
        Cli inspect = Cli.run("inspect", out);
        assertThat(inspect.out())
                .containsPattern("model\\.layers\\.1\\.mlp\\.experts\\.lora_gate_and_up_A\\s+BF16\\s+\\[6, 48, 2\\]")
                .containsPattern("model\\.layers\\.1\\.mlp\\.experts\\.lora_down_B\\s+BF16\\s+\\[6, 2, 48\\]")
                .contains("model.layers.1.mlp.experts.5.gate_proj.lora_B.weight")
                .doesNotContain("up_proj.lora_A");
    }

    /** A one-file safetensors checkpoint of BF16 tensors with random bytes. */
    static void writeBf16(Path file, Map<String, long[]> tensors) throws IOException {
        StringBuilder header = new StringBuilder("{");
        long offset = 0;
        for (var t : tensors.entrySet()) {
            long bytes = 2;
            StringBuilder shape = new StringBuilder();
            for (long d : t.getValue()) {
                bytes *= d;
                shape.append(shape.isEmpty() ? "" : ",").append(d);
            }
            header.append(header.length() > 1 ? "," : "").append('"').append(t.getKey()).append("\":{\"dtype\":\"BF16\",\"shape\":[")
                    .append(shape).append("],\"data_offsets\":[").append(offset).append(',').append(offset + bytes).append("]}");
            offset += bytes;
        }
        byte[] json = header.append('}').toString().getBytes(StandardCharsets.US_ASCII);
        byte[] data = new byte[Math.toIntExact(offset)];
        new Random(3).nextBytes(data);
        ByteBuffer out = ByteBuffer.allocate(8 + json.length + data.length).order(ByteOrder.LITTLE_ENDIAN);
        Files.write(file, out.putLong(json.length).put(json).put(data).array());
    }
}
