package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Converters and the ingest service killed with SIGKILL (no shutdown hook, no cleanup) at many points
 * of their run: the output name is then either absent (or still the checkpoint it replaced) or a
 * complete checkpoint that {@code verify} accepts, never a torn one. Hidden staging folders may stay
 * behind; they never carry the output's name.
 */
class KilledConversionTest {
    /**
     * From start-up into the writing of {@link #input} (about a second of it here) and past its commit;
     * the last point waits for the run to end, so one outcome is always the committed checkpoint.
     */
    private static final long[] KILL_AFTER_MILLIS = {150, 400, 700, 1000, 1300, 1600, 2000, 2600, 3500, Long.MAX_VALUE};

    @TempDir
    static Path tmp;

    static Path input;
    static Path older;
    static Path expected;
    static Path expectedOlder;

    @BeforeAll
    static void checkpoints() {
        input = tmp.resolve("hf");
        older = tmp.resolve("hf-older");
        expected = tmp.resolve("expected");
        expectedOlder = tmp.resolve("expected-older");
        for (var args : List.of(List.of(input, "1"), List.of(older, "2"))) {
            Cli g = Cli.run("generate", args.get(0), "--hidden", "1024", "--moe-inter", "512", "--experts", "16",
                    "--layers", "4", "--mtp-layers", "0", "--seed", args.get(1), "--max-shard-size", "40MB");
            assertThat(g.exitCode()).as(g.err()).isZero();
        }
        assertThat(Cli.run("from-hf", input, expected, "--no-sync").exitCode()).isZero();
        assertThat(Cli.run("from-hf", older, expectedOlder, "--no-sync").exitCode()).isZero();
    }

    static void killAfter(Process p, long millis) throws InterruptedException {
        if (millis == Long.MAX_VALUE) {
            assertThat(p.waitFor(120, TimeUnit.SECONDS)).isTrue();
            assertThat(p.exitValue()).isZero();
            return;
        }
        Thread.sleep(millis);
        p.destroyForcibly();
        assertThat(p.waitFor(30, TimeUnit.SECONDS)).isTrue();
    }

    static boolean matches(Path expectedCheckpoint, Path out) {
        return Cli.run("verify", expectedCheckpoint, out).exitCode() == ExitCodes.OK;
    }

    /** Whether the kill landed while the checkpoint was being written: its staging folder is left. */
    static boolean stagingLeft(Path dir, String name) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.anyMatch(p -> p.getFileName().toString().startsWith("." + name + ".partial-"));
        }
    }

    static List<String> visibleEntries(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).filter(n -> !n.startsWith(".")).sorted().toList();
        }
    }

    @Test
    void aConverterKilledAnywhereLeavesNoOutputOrACompleteOne() throws Exception {
        int complete = 0;
        int midWrite = 0;
        for (long millis : KILL_AFTER_MILLIS) {
            Path parent = Files.createDirectories(tmp.resolve("fresh-" + millis));
            Path out = parent.resolve("native");
            Process p = ChildMoeflux.start(tmp.resolve("fresh.log"), "from-hf", input, out);
            killAfter(p, millis);
            if (Files.exists(out)) {
                assertThat(matches(expected, out)).as("killed after %d ms", millis).isTrue();
                complete++;
            }
            midWrite += stagingLeft(parent, "native") ? 1 : 0;
            assertThat(visibleEntries(parent)).isSubsetOf("native");
        }
        assertThat(complete).isPositive();
        assertThat(midWrite).as("kills that landed while the output was written").isPositive();
    }

    @Test
    void aForcedConverterKilledAnywhereLeavesTheOldCheckpointOrTheNewOneNeverNeither() throws Exception {
        int replaced = 0;
        int midWrite = 0;
        for (long millis : KILL_AFTER_MILLIS) {
            Path parent = Files.createDirectories(tmp.resolve("forced-" + millis));
            Path out = parent.resolve("native");
            assertThat(Cli.run("copy", expectedOlder, out, "--no-sync").exitCode()).isZero();
            Process p = ChildMoeflux.start(tmp.resolve("forced.log"), "from-hf", input, out, "--force");
            killAfter(p, millis);
            assertThat(out).as("killed after %d ms", millis).exists();
            if (matches(expected, out)) {
                replaced++;
            } else {
                assertThat(matches(expectedOlder, out)).as("killed after %d ms: neither the old nor the new", millis).isTrue();
            }
            midWrite += stagingLeft(parent, "native") ? 1 : 0;
            assertThat(visibleEntries(parent)).containsExactly("native");
        }
        assertThat(replaced).isPositive();
        assertThat(midWrite).as("kills that landed while the output was written").isPositive();
    }

    @Test
    void anIngestServiceKilledDuringAnUploadLeavesNoCheckpointOrACompleteOne() throws Exception {
        int midWrite = 0;
        HttpClient client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
        List<Path> shards;
        try (Stream<Path> s = Files.list(input)) {
            shards = s.filter(f -> f.toString().endsWith(".safetensors")).sorted().toList();
        }
        int complete = 0;
        for (long millis : KILL_AFTER_MILLIS) {
            Path sink = Files.createDirectories(tmp.resolve("sink-" + millis));
            Path log = tmp.resolve("serve-" + millis + ".log");
            Process serve = ChildMoeflux.start(log, "serve", "--port", "0", "--sink", sink, "--direction", "from-hf",
                    "--config", input.resolve("config.json"));
            URI base = ChildMoeflux.awaitListening(serve, log);
            HttpRequest.BodyPublisher[] parts = shards.stream().map(KilledConversionTest::ofFile)
                    .toArray(HttpRequest.BodyPublisher[]::new);
            CompletableFuture<HttpResponse<String>> upload = client.sendAsync(
                    HttpRequest.newBuilder(base.resolve("/v1/checkpoints/step-1"))
                            .PUT(HttpRequest.BodyPublishers.concat(parts)).build(),
                    HttpResponse.BodyHandlers.ofString());
            if (millis == Long.MAX_VALUE) {
                assertThat(upload.get(120, TimeUnit.SECONDS).statusCode()).isEqualTo(200);
                millis = 0;
            }
            killAfter(serve, millis);
            upload.handle((r, e) -> r).get(30, TimeUnit.SECONDS);
            Path out = sink.resolve("step-1");
            if (Files.exists(out)) {
                assertThat(matches(expected, out)).as("killed after %d ms", millis).isTrue();
                complete++;
            }
            midWrite += stagingLeft(sink, "step-1") ? 1 : 0;
            assertThat(visibleEntries(sink)).isSubsetOf("step-1");
        }
        assertThat(complete).isPositive();
        assertThat(midWrite).as("kills that landed while the checkpoint was written").isPositive();
    }

    private static HttpRequest.BodyPublisher ofFile(Path f) {
        try {
            return HttpRequest.BodyPublishers.ofFile(f);
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }
}
