package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.jar.Attributes;
import java.util.jar.JarEntry;
import java.util.jar.JarOutputStream;
import java.util.jar.Manifest;
import javax.tools.ToolProvider;
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

    /**
     * A jar whose main class prints {@code version}, then waits for a line and answers it from a class
     * it loads only then, as a long-running broker or service loads classes as it goes.
     */
    private static byte[] versionJar(Path work, String version) throws IOException {
        Path src = Files.createDirectories(work.resolve("src-" + version));
        Path classes = Files.createDirectories(work.resolve("classes-" + version));
        Files.writeString(src.resolve("Main.java"), """
                public class Main {
                    public static void main(String[] args) throws Exception {
                        if (args.length > 0 && args[0].equals("demo")) return;
                        System.out.println("%s");
                        System.out.flush();
                        new java.io.BufferedReader(new java.io.InputStreamReader(System.in)).readLine();
                        System.out.println(Late.answer());
                    }
                }
                """.formatted(version));
        Files.writeString(src.resolve("Late.java"), """
                class Late {
                    static String answer() { return "late %s"; }
                }
                """.formatted(version));
        int rc = ToolProvider.getSystemJavaCompiler().run(null, null, null, "-d", classes.toString(),
                src.resolve("Main.java").toString(), src.resolve("Late.java").toString());
        assertThat(rc).isZero();
        Manifest manifest = new Manifest();
        manifest.getMainAttributes().put(Attributes.Name.MANIFEST_VERSION, "1.0");
        manifest.getMainAttributes().put(Attributes.Name.MAIN_CLASS, "Main");
        var bytes = new java.io.ByteArrayOutputStream();
        try (JarOutputStream jar = new JarOutputStream(bytes, manifest)) {
            for (String c : List.of("Main.class", "Late.class")) {
                jar.putNextEntry(new JarEntry(c));
                jar.write(Files.readAllBytes(classes.resolve(c)));
                jar.closeEntry();
            }
        }
        return bytes.toByteArray();
    }

    @Test
    void aRebuildDoesNotPullTheJarFromUnderARunningProcess(@TempDir Path root) throws Exception {
        Files.copy(LAUNCHER, root.resolve("moeflux"));
        Files.createDirectories(root.resolve(".mvn"));
        Files.copy(LAUNCHER.resolveSibling(".mvn/jdk.sh"), root.resolve(".mvn/jdk.sh"));
        Path target = Files.createDirectories(root.resolve("src/target"));
        Files.copy(JVM_OPTIONS, root.resolve("src/jvm.options"));
        Path builtJar = target.resolve("moeflux.jar");
        Files.write(builtJar, versionJar(jvmDir, "A"));
        String javaHome = Path.of(ProcessHandle.current().info().command().orElseThrow()).getParent().getParent().toString();

        ProcessBuilder pb = new ProcessBuilder("bash", root.resolve("moeflux").toString()).redirectError(ProcessBuilder.Redirect.DISCARD);
        pb.environment().put("JAVA_HOME", javaHome);
        Process running = pb.start();
        BufferedReader out = new BufferedReader(new InputStreamReader(running.getInputStream(), StandardCharsets.UTF_8));
        assertThat(out.readLine()).isEqualTo("A");

        // A build writes its jar where the last one was, as Maven does.
        Files.write(builtJar, versionJar(jvmDir, "B"));
        assertThat(builtJar.toFile().setLastModified(System.currentTimeMillis() + 2000)).isTrue();
        Process next = pb.start();
        assertThat(new String(next.getInputStream().readNBytes(2), StandardCharsets.UTF_8)).isEqualTo("B\n");
        next.destroy();
        assertThat(next.waitFor(30, TimeUnit.SECONDS)).isTrue();

        try (OutputStream in = running.getOutputStream()) {
            in.write("go\n".getBytes(StandardCharsets.UTF_8));
        }
        assertThat(out.readLine()).isEqualTo("late A");
        assertThat(running.waitFor(30, TimeUnit.SECONDS)).isTrue();
        assertThat(running.exitValue()).isZero();

        // Once nothing runs from the earlier builds' copies, the next build's install removes them.
        Files.write(builtJar, versionJar(jvmDir, "C"));
        assertThat(builtJar.toFile().setLastModified(System.currentTimeMillis() + 4000)).isTrue();
        Process last = pb.start();
        assertThat(new String(last.getInputStream().readNBytes(2), StandardCharsets.UTF_8)).isEqualTo("C\n");
        last.destroy();
        try (var copies = Files.list(target.resolve("run"))) {
            assertThat(copies.map(p -> p.getFileName().toString()).filter(n -> n.endsWith(".jar")).toList()).hasSize(1);
        }
    }
}
