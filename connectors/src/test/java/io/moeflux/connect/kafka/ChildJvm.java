package io.moeflux.connect.kafka;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * A main class of the test classpath in a JVM of its own, so a test can kill it the hard way (SIGKILL,
 * no shutdown hooks, no flushing). The child reports progress as lines on its standard output; its
 * standard error goes to a log file whose tail any failure here quotes.
 */
final class ChildJvm implements AutoCloseable {
    private static final Duration POLL = Duration.ofMillis(100);

    private final String name;
    private final Process process;
    private final Path log;
    private final BlockingQueue<String> lines = new LinkedBlockingQueue<>();
    private final Thread reader;

    private ChildJvm(String name, Process process, Path log) {
        this.name = name;
        this.process = process;
        this.log = log;
        this.reader = Thread.ofPlatform().daemon().name(name + "-stdout").unstarted(this::readLines);
    }

    /** Starts {@code main} with {@code args}, appending its standard error to {@code log}. */
    static ChildJvm start(Class<?> main, Path log, String... args) {
        List<String> command = new ArrayList<>();
        command.add(ProcessHandle.current().info().command().orElseThrow(
                () -> new IllegalStateException("cannot tell which java binary runs this JVM")));
        command.addAll(List.of("-Xmx512m",
                "-cp", System.getProperty("java.class.path"), main.getName()));
        command.addAll(List.of(args));
        try {
            Process process = new ProcessBuilder(command)
                    .redirectError(ProcessBuilder.Redirect.appendTo(log.toFile()))
                    .start();
            ChildJvm child = new ChildJvm(main.getSimpleName(), process, log);
            child.reader.start();
            return child;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start " + main.getName(), e);
        }
    }

    private void readLines() {
        try (BufferedReader out = new BufferedReader(new InputStreamReader(process.getInputStream(),
                StandardCharsets.UTF_8))) {
            for (String line = out.readLine(); line != null; line = out.readLine()) {
                lines.add(line);
            }
        } catch (IOException e) {
            // The pipe went away with a killed child: whatever it printed before is queued already.
        }
    }

    /** The next line starting with {@code prefix}, skipping others; fails if the child exits or is silent too long. */
    String awaitLine(String prefix, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (System.nanoTime() < deadline) {
            String line = lines.poll(POLL.toMillis(), TimeUnit.MILLISECONDS);
            if (line != null && line.startsWith(prefix)) {
                return line;
            }
            // Only once the reader has drained the pipe is an exited child's output complete.
            if (line == null && !reader.isAlive() && lines.isEmpty()) {
                process.waitFor(10, TimeUnit.SECONDS);
                throw failure((process.isAlive() ? "closed its output" : "exited with code " + process.exitValue())
                        + " before printing '" + prefix + "'");
            }
        }
        throw failure("printed no '" + prefix + "' within " + timeout.toSeconds() + " s");
    }

    /** Waits for the child to exit on its own and returns its exit code. */
    int awaitExit(Duration timeout) throws InterruptedException {
        if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
            throw failure("did not exit within " + timeout.toSeconds() + " s");
        }
        return process.exitValue();
    }

    /** SIGKILL, and waits until the process is gone. */
    void kill() throws InterruptedException {
        process.destroyForcibly();
        if (!process.waitFor(30, TimeUnit.SECONDS)) {
            throw failure("survived SIGKILL for 30 s");
        }
    }

    @Override
    public void close() throws InterruptedException {
        if (process.isAlive()) {
            kill();
        }
    }

    private AssertionError failure(String what) {
        return new AssertionError(name + " (pid " + process.pid() + ") " + what + "; the end of its log " + log
                + ":\n" + logTail());
    }

    private String logTail() {
        try {
            List<String> all = Files.readAllLines(log, StandardCharsets.UTF_8);
            return String.join("\n", all.subList(Math.max(0, all.size() - 40), all.size()));
        } catch (IOException e) {
            return "(unreadable: " + e.getMessage() + ")";
        }
    }
}
