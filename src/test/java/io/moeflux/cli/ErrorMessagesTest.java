package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Exit codes as the README's table gives them, and one-line errors that say what is wrong in the user's terms. */
class ErrorMessagesTest {
    private static final Path TINY_HF = Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf");
    private static final Path TINY_NATIVE = Cli.REFERENCE_VECTORS.resolve("hy3-tiny-native/native");

    @TempDir
    Path dir;

    private static void assertOneLine(Cli r, int exitCode, String... contained) {
        assertThat(r.exitCode()).as(r.err()).isEqualTo(exitCode);
        assertThat(r.err().lines()).singleElement().asString().contains(contained);
    }

    @Test
    void malformedKafkaLocationsAreUsageErrors() {
        assertOneLine(Cli.run("copy", "kafka://localhost:9092", dir.resolve("out")), ExitCodes.USAGE, "names no topic");
        assertOneLine(Cli.run("copy", TINY_HF, "kafka://localhost:99999/t?checkpoint=a"), ExitCodes.USAGE,
                "port 99999 of 'localhost:99999' is not in [1, 65535]");
        assertOneLine(Cli.run("from-hf", "kafka://h:1/t?bogus=1", dir.resolve("out")), ExitCodes.USAGE, "unknown parameter 'bogus'");
    }

    @Test
    void anInvalidRegularExpressionIsOneLineWithoutJavasExceptionText() {
        Cli r = Cli.run("to-hf", TINY_NATIVE, dir.resolve("out"), "--exclude-key-regex", "(");

        assertOneLine(r, ExitCodes.USAGE, "invalid regular expression \"(\": Unclosed group at index 1");
        assertThat(r.err()).doesNotContain("PatternSyntaxException");
    }

    @Test
    void aConfigThatIsNotJsonSaysWhereWithoutTheParsersInternals() throws IOException {
        Path in = Cli.copyOfTinyHf(dir.resolve("hf"));
        Files.writeString(in.resolve("config.json"), "{\"num_experts\": NaN}");

        Cli r = Cli.run("from-hf", in, dir.resolve("out"));

        assertOneLine(r, ExitCodes.BAD_INPUT, "config.json: not valid JSON: Non-standard token 'NaN'");
        assertThat(r.err()).doesNotContain("JsonReadFeature").doesNotContain("REDACTED").doesNotContain("[Source");
    }

    @Test
    void withJsonAFailureIsAlsoAJsonDocumentOnStdout() {
        Cli r = Cli.run("inspect", dir.resolve("missing"), "--json");

        assertOneLine(r, ExitCodes.IO_FAILURE, "no such file or folder");
        assertThat(r.json().get("exit_code").asInt()).isEqualTo(ExitCodes.IO_FAILURE);
        assertThat(r.json().get("error").asText()).contains("missing");
    }

    @Test
    void aUsageErrorWithJsonIsAJsonDocumentToo() {
        Cli r = Cli.run("inspect", TINY_HF, "--json", "--no-such-option");

        assertThat(r.exitCode()).isEqualTo(ExitCodes.USAGE);
        assertThat(r.json().get("exit_code").asInt()).isEqualTo(ExitCodes.USAGE);
    }

    @Test
    void aFileThatIsNotSafetensorsSaysSo() throws IOException {
        Path text = Files.writeString(dir.resolve("passwd"), "root:x:0:0:root:/root:/bin/bash\n");

        assertOneLine(Cli.run("inspect", text), ExitCodes.BAD_INPUT, "not a safetensors file");
    }

    @Test
    void serveOnABusyPortNamesThePort() throws IOException {
        try (ServerSocket taken = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            Cli r = Cli.run("serve", "--port", taken.getLocalPort(), "--sink", dir.resolve("sink"), "--direction", "none");

            assertOneLine(r, ExitCodes.IO_FAILURE, "port " + taken.getLocalPort() + " on 127.0.0.1 is in use");
        }
    }

    @Test
    void errorsNameTheOutputNotItsHiddenStagingFolder() {
        assertThat(ErrorHandler.asTheUserNamesIt("I/O error on /data/ckpt/.native.partial-1pqvkuy5pcbwy/model.safetensors: no room"))
                .isEqualTo("I/O error on /data/ckpt/native/model.safetensors: no room");
        assertThat(ErrorHandler.asTheUserNamesIt("cannot rename /d/.out.partial-x9 to /d/out")).isEqualTo("cannot rename /d/out to /d/out");
        assertThat(ErrorHandler.asTheUserNamesIt("/d/.hidden/file and /d/a.partial-b")).isEqualTo("/d/.hidden/file and /d/a.partial-b");
    }

    @Test
    void aDiskTooSmallForTheOutputIsNamedAsTheOutput() throws Exception {
        Path small = Files.createDirectories(dir.resolve("small"));
        Process mount = new ProcessBuilder("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small.toString())
                .redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        assumeTrue(mount.waitFor() == 0, "mounting a tmpfs needs root");
        try {
            Cli r = Cli.run("generate", small.resolve("gen"), "--preset", "hy3-keys");

            assertOneLine(r, ExitCodes.IO_FAILURE, small.resolve("gen").resolve("model.safetensors").toString(), "no room");
            assertThat(r.err()).doesNotContain(".partial-");
        } finally {
            new ProcessBuilder("umount", small.toString()).start().waitFor();
        }
    }
}
