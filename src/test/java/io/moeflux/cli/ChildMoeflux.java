package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.net.URI;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** moeflux in a JVM of its own, started with the launcher's JVM options (its heap limit among them). */
final class ChildMoeflux {
    private ChildMoeflux() {}

    /** Starts {@code moeflux ARGS}; stdout is discarded, stderr appended to {@code log}. */
    static Process start(Path log, Object... args) throws IOException {
        List<String> command = new ArrayList<>(List.of(ProcessHandle.current().info().command().orElseThrow(),
                "@" + Path.of("jvm.options").toAbsolutePath(), "--enable-native-access=ALL-UNNAMED",
                "-cp", System.getProperty("java.class.path"), Main.class.getName()));
        for (Object a : args) {
            command.add(a.toString());
        }
        return new ProcessBuilder(command).redirectOutput(ProcessBuilder.Redirect.DISCARD)
                .redirectError(ProcessBuilder.Redirect.appendTo(log.toFile())).start();
    }

    /** The base address a {@code serve} started by {@link #start} prints once it listens. */
    static URI awaitListening(Process serve, Path log) throws Exception {
        Pattern listening = Pattern.compile("listening on (\\S+)");
        long deadline = System.nanoTime() + Duration.ofSeconds(30).toNanos();
        while (System.nanoTime() < deadline) {
            Matcher m = listening.matcher(Files.exists(log) ? Files.readString(log) : "");
            if (m.find()) {
                return URI.create(m.group(1));
            }
            assertThat(serve.isAlive()).as(Files.exists(log) ? Files.readString(log) : "serve exited").isTrue();
            Thread.sleep(20);
        }
        throw new AssertionError("serve did not start: " + Files.readString(log));
    }
}
