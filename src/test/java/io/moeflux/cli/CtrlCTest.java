package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Ctrl-C (SIGINT) at any point of a conversion: the run exits 130 with at most one line, which says it
 * was cancelled, leaves no staging folder and no output, and prints nothing of Reactor's or Java's.
 */
class CtrlCTest {
    @TempDir
    static Path tmp;

    static Path input;
    static Path expected;

    @BeforeAll
    static void checkpoint() {
        input = tmp.resolve("hf");
        Cli g = Cli.run("generate", input, "--hidden", "1024", "--moe-inter", "512", "--experts", "16",
                "--layers", "4", "--mtp-layers", "0", "--max-shard-size", "40MB");
        assertThat(g.exitCode()).as(g.err()).isZero();
        expected = tmp.resolve("expected");
        assertThat(Cli.run("from-hf", input, expected, "--no-sync").exitCode()).isZero();
    }

    /**
     * Starts from-hf with SIGINT handled as a terminal delivers it: a JVM started by one that ignores
     * SIGINT (a background job) would inherit the ignoring, so env resets it before exec.
     */
    private static Process fromHf(Path out, Path log) throws IOException {
        List<String> command = new ArrayList<>(List.of("env", "--default-signal=INT",
                ProcessHandle.current().info().command().orElseThrow(), "@" + Path.of("jvm.options").toAbsolutePath(),
                "--enable-native-access=ALL-UNNAMED", "-cp", System.getProperty("java.class.path"), Main.class.getName(),
                "from-hf", input.toString(), out.toString(), "--no-sync"));
        return new ProcessBuilder(command).redirectOutput(ProcessBuilder.Redirect.DISCARD)
                .redirectError(log.toFile()).start();
    }

    /** SIGINT to {@code p}; one that has just ended cannot be signalled, which is no failure. */
    private static void interrupt(Process p) throws Exception {
        new ProcessBuilder("kill", "-INT", Long.toString(p.pid())).start().waitFor();
    }

    private static List<String> entries(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(f -> f.getFileName().toString()).toList();
        }
    }

    @Test
    void ctrlCWhileTheOutputIsWrittenRemovesItAndSaysSoInOneLine() throws Exception {
        for (int i = 0; i < 3; i++) {
            Path parent = Files.createDirectories(tmp.resolve("mid-" + i));
            Path log = tmp.resolve("mid-" + i + ".log");
            Process p = fromHf(parent.resolve("native"), log);
            long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
            while (entries(parent).stream().noneMatch(n -> n.startsWith(".native.partial-")) && p.isAlive()) {
                assertThat(System.nanoTime()).isLessThan(deadline);
                Thread.sleep(5);
            }
            assertThat(p.isAlive()).as("the staging folder appeared while the run went on").isTrue();
            assertThat(new ProcessBuilder("kill", "-INT", Long.toString(p.pid())).start().waitFor()).isZero();

            assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
            assertThat(p.exitValue()).isEqualTo(ExitCodes.CANCELLED);
            assertThat(Files.readAllLines(log)).containsExactly("moeflux from-hf: cancelled; nothing was committed");
            assertThat(entries(parent)).isEmpty();
        }
    }

    @Test
    void ctrlCAtAnyMomentLeavesNoHalfWrittenOutputAndNoStackTrace() throws Exception {
        for (long millis : new long[] {100, 300, 500, 800, 1200, 1800}) {
            Path parent = Files.createDirectories(tmp.resolve("at-" + millis));
            Path log = tmp.resolve("at-" + millis + ".log");
            Process p = fromHf(parent.resolve("native"), log);
            Thread.sleep(millis);
            interrupt(p);

            assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
            List<String> lines = Files.readAllLines(log);
            if (p.exitValue() == ExitCodes.OK || Files.exists(parent.resolve("native"))) {
                // Finished, or committed before the signal came: then the output is whole and nothing claims otherwise.
                assertThat(entries(parent)).as("at %d ms", millis).containsExactly("native");
                assertThat(Cli.run("verify", expected, parent.resolve("native")).exitCode()).isEqualTo(ExitCodes.OK);
                assertThat(lines).hasSizeLessThanOrEqualTo(1).noneMatch(l -> l.contains("nothing was committed"));
            } else {
                assertThat(p.exitValue()).isEqualTo(ExitCodes.CANCELLED);
                assertThat(lines).as("at %d ms", millis).hasSizeLessThanOrEqualTo(1).allMatch(l -> l.endsWith("cancelled; nothing was committed"));
                assertThat(entries(parent)).as("at %d ms", millis).isEmpty();
            }
        }
    }
}
