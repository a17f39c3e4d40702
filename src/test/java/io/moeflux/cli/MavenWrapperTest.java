package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code ./mvnw} as a new user meets it: a fresh clone, an empty home and Maven user home, and no
 * {@code mvn} to lean on (one on PATH fails the test if called). The first run installs Maven from
 * Maven Central and checks its sum; the second reuses it.
 */
class MavenWrapperTest {
    @TempDir
    Path dir;

    @Test
    void aFreshCloneInstallsMavenOnceWithoutASystemMvnAndReusesIt() throws Exception {
        Path clone = dir.resolve("clone");
        Path repo = Path.of("..").toAbsolutePath().normalize();
        assertThat(run(dir, List.of("git", "clone", "--quiet", repo.toString(), clone.toString()), Map.of()).exitCode).isZero();

        Path fakeBin = Files.createDirectories(dir.resolve("bin"));
        Path fakeMvn = fakeBin.resolve("mvn");
        Files.writeString(fakeMvn, "#!/bin/sh\necho 'a system mvn was called' >&2\nexit 99\n");
        Files.setPosixFilePermissions(fakeMvn, PosixFilePermissions.fromString("rwxr-xr-x"));
        Path home = Files.createDirectories(dir.resolve("home"));
        Map<String, String> env = Map.of("HOME", home.toString(), "MAVEN_USER_HOME", home.resolve("m2").toString(),
                "PATH", fakeBin + ":/usr/bin:/bin", "JAVA_HOME", System.getProperty("java.home"), "MVNW_VERBOSE", "true");

        Result install = run(clone, List.of("./mvnw", "-v"), env);
        assertThat(install.exitCode).as(install.output).isZero();
        assertThat(install.output).contains("Couldn't find MAVEN_HOME, downloading and installing it").contains("Apache Maven 3.9.11")
                .doesNotContain("a system mvn was called");
        assertThat(home.resolve("m2/wrapper/dists/apache-maven-3.9.11")).isDirectory();

        Result reuse = run(clone, List.of("./mvnw", "-v"), env);
        assertThat(reuse.exitCode).as(reuse.output).isZero();
        assertThat(reuse.output).contains("Apache Maven 3.9.11").doesNotContain("downloading");
    }

    private record Result(int exitCode, String output) {}

    private static Result run(Path cwd, List<String> command, Map<String, String> env) throws IOException, InterruptedException {
        ProcessBuilder pb = new ProcessBuilder(command).directory(cwd.toFile()).redirectErrorStream(true);
        if (!env.isEmpty()) {
            pb.environment().clear();
            pb.environment().putAll(env);
        }
        Process p = pb.start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(120, TimeUnit.SECONDS)).isTrue();
        return new Result(p.exitValue(), out);
    }
}
