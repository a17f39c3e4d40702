package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The conversions through the CLI against the Python reference's outputs, compared with {@code verify}. */
class ReferenceConversionTest {
    private static final Path TINY_HF = Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf");
    private static final Path TINY_NATIVE = Cli.REFERENCE_VECTORS.resolve("hy3-tiny/native");
    private static final Path NATIVE_IN = Cli.REFERENCE_VECTORS.resolve("hy3-tiny-native/native");
    private static final Path NATIVE_EXPECTED_HF = Cli.REFERENCE_VECTORS.resolve("hy3-tiny-native/hf");

    @TempDir
    Path dir;

    @Test
    void fromHfOfTheShardedReferenceInputEqualsTheReferenceOutput() {
        Path out = dir.resolve("native");
        Cli convert = Cli.run("from-hf", TINY_HF, out);
        assertThat(convert.exitCode()).as(convert.err()).isEqualTo(ExitCodes.OK);
        assertThat(convert.out()).startsWith("from-hf: 129 tensors").contains("-> 44 tensors");

        Cli verify = Cli.run("verify", out, TINY_NATIVE);
        assertThat(verify.exitCode()).as(verify.out()).isEqualTo(ExitCodes.OK);
        assertThat(verify.out()).contains("identical: 44 tensors");
    }

    @Test
    void toHfWithExcludeRegexEqualsTheReferenceOutput() {
        Path out = dir.resolve("hf");
        Cli convert = Cli.run("to-hf", NATIVE_IN, out, "--exclude-key-regex", "^custom\\.exclude");
        assertThat(convert.exitCode()).as(convert.err()).isEqualTo(ExitCodes.OK);

        Cli verify = Cli.run("verify", out, NATIVE_EXPECTED_HF);
        assertThat(verify.exitCode()).as(verify.out()).isEqualTo(ExitCodes.OK);
        assertThat(verify.out()).contains("identical: 65 tensors");
    }

    @Test
    void perTensorToHfGivesTheSameCheckpointAsTheStreamStage() {
        Path stream = dir.resolve("stream");
        Path perTensor = dir.resolve("per-tensor");
        assertThat(Cli.run("to-hf", NATIVE_IN, stream, "--exclude-key-regex", "^custom\\.exclude").exitCode()).isZero();
        Cli convert = Cli.run("to-hf", NATIVE_IN, perTensor, "--exclude-key-regex", "^custom\\.exclude", "--per-tensor");
        assertThat(convert.exitCode()).as(convert.err()).isEqualTo(ExitCodes.OK);

        assertThat(Cli.run("verify", perTensor, stream).exitCode()).isEqualTo(ExitCodes.OK);
        assertThat(Cli.run("verify", perTensor, NATIVE_EXPECTED_HF).exitCode()).isEqualTo(ExitCodes.OK);
    }

    @Test
    void withoutExcludeRegexTheCustomKeyPassesThrough() {
        Path out = dir.resolve("hf");
        assertThat(Cli.run("to-hf", NATIVE_IN, out).exitCode()).isZero();
        Cli verify = Cli.run("verify", out, NATIVE_EXPECTED_HF);
        assertThat(verify.exitCode()).isEqualTo(ExitCodes.DIFFERENT);
        assertThat(verify.out()).contains("only in A: custom.exclude.weight").contains("different: 1 difference");
    }

    @Test
    void expertParallelRankKeepsItsShareOfExperts() {
        Path out = dir.resolve("rank1");
        assertThat(Cli.run("from-hf", TINY_HF, out, "--ep-size", "3", "--ep-rank", "1").exitCode()).isZero();
        // 8 experts over 3 ranks: 3, 3, 2; rank 1 has experts 3..5.
        Cli inspect = Cli.run("inspect", out);
        assertThat(inspect.out())
                .containsPattern("model\\.layers\\.1\\.mlp\\.experts\\.gate_and_up_projs\\s+BF16\\s+\\[3, 32, 32\\]")
                .containsPattern("model\\.layers\\.1\\.mlp\\.gate\\.weight\\s+F32\\s+\\[8, 32\\]");
    }

    @Test
    void f32TargetTypeCastsOnlyTheMergedExperts() {
        Path out = dir.resolve("f32");
        assertThat(Cli.run("from-hf", TINY_HF, out, "--dtype", "f32").exitCode()).isZero();
        Cli inspect = Cli.run("inspect", out);
        assertThat(inspect.out())
                .containsPattern("model\\.layers\\.2\\.mlp\\.experts\\.down_projs\\s+F32\\s+\\[8, 16, 32\\]")
                .containsPattern("model\\.layers\\.2\\.self_attn\\.q_proj\\.weight\\s+BF16");
    }

    @Test
    void flagsOverrideTheConfig() {
        // With num_experts 4 the grouped tensors (first dimension 8) do not fit: a clear bad-input error.
        Cli r = Cli.run("to-hf", NATIVE_IN, dir.resolve("hf"), "--num-experts", "4");
        assertThat(r.exitCode()).isEqualTo(ExitCodes.BAD_INPUT);
        assertThat(r.err()).contains("num_experts = 4").doesNotContain("Exception");
        assertThat(dir.resolve("hf")).doesNotExist();
    }

    @Test
    void jsonSummaryGoesToStdout() {
        Cli r = Cli.run("from-hf", TINY_HF, dir.resolve("native"), "--json");
        assertThat(r.exitCode()).isZero();
        var json = r.json();
        assertThat(json.get("command").asText()).isEqualTo("from-hf");
        assertThat(json.get("input_tensors").asLong()).isEqualTo(129);
        assertThat(json.get("tensors").asLong()).isEqualTo(44);
        assertThat(json.get("files").asInt()).isEqualTo(1);
        assertThat(r.err()).isEmpty();
    }
}
