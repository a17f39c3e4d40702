package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The {@code ./moeflux} launcher's JDK lookup, on the paths that never reach a build, and its JVM options. */
class LauncherTest {
    private static final Path LAUNCHER = Path.of("..", "moeflux").toAbsolutePath().normalize();
    private static final Path JVM_OPTIONS = Path.of("jvm.options").toAbsolutePath();

    @TempDir
    Path jvmDir;
    @TempDir
    Path tools;

    /**
     * A PATH with the shell tools the launcher uses and no {@code java}: the machine's own java (17
     * here, maybe 25 elsewhere) must not decide the outcome.
     */
    private String toolsWithoutJava() throws IOException {
        for (String tool : new String[] {"readlink", "dirname", "sed", "head"}) {
            Path found = Stream.of("/usr/bin", "/bin").map(d -> Path.of(d, tool)).filter(Files::isExecutable)
                    .findFirst().orElseThrow(() -> new IllegalStateException(tool + " is not in /usr/bin or /bin"));
            Path wrapper = tools.resolve(tool);
            // A script rather than a link: JUnit warns about links out of a temporary folder it deletes.
            Files.writeString(wrapper, "#!/bin/sh\nexec " + found + " \"$@\"\n");
            assertThat(wrapper.toFile().setExecutable(true)).isTrue();
        }
        return tools.toString();
    }

    private record Run(int exit, String out, String err) {}

    private Run launch(Map<String, String> env) throws IOException, InterruptedException {
        ProcessBuilder pb = new ProcessBuilder("bash", LAUNCHER.toString(), "--version");
        pb.environment().clear();
        pb.environment().putAll(env);
        Process p = pb.start();
        assertThat(p.waitFor(30, TimeUnit.SECONDS)).isTrue();
        return new Run(p.exitValue(), new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8),
                new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8));
    }

    @Test
    void withNoJdkAnywhereItSaysSoInOneSentenceAndExits1() throws Exception {
        Run r = launch(Map.of("PATH", toolsWithoutJava(), "MOEFLUX_JVM_DIR", jvmDir.toString()));

        assertThat(r.exit()).isEqualTo(1);
        assertThat(r.out()).isEmpty();
        assertThat(r.err().lines()).singleElement().asString()
                .startsWith("moeflux needs a JDK 25 or newer").contains("JAVA_HOME");
    }

    @Test
    void anOlderJdkInJavaHomeAndOnPathIsPassedOver() throws Exception {
        Path oldJdk = jvmDir.resolve("jdk-17");
        Files.createDirectories(oldJdk.resolve("bin"));
        for (String tool : new String[] {"java", "javac"}) {
            Path bin = oldJdk.resolve("bin").resolve(tool);
            Files.writeString(bin, "#!/bin/sh\nexit 0\n");
            assertThat(bin.toFile().setExecutable(true)).isTrue();
        }
        Files.writeString(oldJdk.resolve("release"), "JAVA_VERSION=\"17.0.15\"\n");

        Run r = launch(Map.of("JAVA_HOME", oldJdk.toString(), "PATH", oldJdk.resolve("bin") + ":" + toolsWithoutJava(),
                "MOEFLUX_JVM_DIR", jvmDir.toString()));

        assertThat(r.exit()).isEqualTo(1);
        assertThat(r.err()).startsWith("moeflux needs a JDK 25 or newer");
    }

    @Test
    void theLauncherAndTheDockerImageRunWithTheOneJvmOptionsFile() throws Exception {
        assertThat(Files.readString(LAUNCHER)).contains("java_opts=(\"@$root/src/jvm.options\")");
        String dockerfile = Files.readString(LAUNCHER.resolveSibling("Dockerfile"));
        assertThat(dockerfile).contains("COPY src/jvm.options /opt/moeflux/jvm.options")
                .contains("ENTRYPOINT [\"java\", \"@/opt/moeflux/jvm.options\", \"-jar\"");

        // The JDK reads the file as it is, comments and all.
        String java = ProcessHandle.current().info().command().orElseThrow();
        Process p = new ProcessBuilder(java, "@" + JVM_OPTIONS, "-XshowSettings:vm", "-version").redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(30, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).as(out).isZero();
        assertThat(out).contains("Max. Heap Size: 512.00M");
    }
}
