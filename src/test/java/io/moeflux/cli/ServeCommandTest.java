package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.moeflux.connect.kafka.LocalKafkaBroker;
import io.moeflux.connect.safetensors.Manifests;
import io.moeflux.serve.IngestServer;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

class ServeCommandTest {
    static final Path NATIVE = Path.of("../pipeline/src/test/resources/reference-vectors/hy3-tiny-native/native");

    @TempDir
    Path tmp;

    private final StringWriter err = new StringWriter();

    private ServeCommand parse(String... args) {
        CommandLine cl = Main.commandLine();
        cl.setErr(new PrintWriter(err, true));
        CommandLine serve = cl.getSubcommands().get("serve");
        serve.setErr(new PrintWriter(err, true));
        cl.parseArgs(args);
        return serve.getCommand();
    }

    private int execute(String... args) {
        CommandLine cl = Main.commandLine();
        cl.setErr(new PrintWriter(err, true));
        cl.getSubcommands().get("serve").setErr(new PrintWriter(err, true));
        return cl.execute(args);
    }

    @Test
    void startsOnLoopbackWithConfigAndTokenAndAnnouncesItsAddress() throws Exception {
        Path token = Files.writeString(tmp.resolve("token"), "t0ken\n");
        ServeCommand command = parse("serve", "--port", "0", "--sink", tmp.resolve("out").toString(), "--direction", "to-hf",
                "--config", NATIVE.resolve("config.json").toString(), "--token-file", token.toString(),
                "--exclude-key-regex", "^custom\\.exclude");
        try (IngestServer server = command.start()) {
            HttpRequest put = HttpRequest.newBuilder(URI.create(server.baseUri() + "/v1/checkpoints/cli"))
                    .header("Authorization", "Bearer t0ken")
                    .PUT(HttpRequest.BodyPublishers.ofFile(NATIVE.resolve("model.safetensors"))).build();
            HttpResponse<String> r = HttpClient.newHttpClient().send(put, HttpResponse.BodyHandlers.ofString());

            assertThat(server.baseUri()).startsWith("http://127.0.0.1:");
            assertThat(err.toString()).contains("listening on " + server.baseUri());
            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            assertThat(tmp.resolve("out/cli/config.json")).hasSameBinaryContentAs(NATIVE.resolve("config.json"));
            assertThat(Files.exists(tmp.resolve("out/cli/model.safetensors"))).isTrue();
        }
    }

    @Test
    void aKafkaSinkThatNamesACheckpointIsAUsageErrorSinceEachUploadNamesItsOwn() {
        int code = execute("serve", "--port", "0", "--sink", "kafka://127.0.0.1:9092/ckpts?checkpoint=x", "--direction", "none");

        assertThat(code).isEqualTo(ExitCodes.USAGE);
        assertThat(err.toString()).contains("leave out ?checkpoint=");
    }

    @Test
    void uploadsToAKafkaSinkArePublishedUnderTheirIdAndMatchTheReference() throws Exception {
        Path hf = Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf");
        try (LocalKafkaBroker broker = LocalKafkaBroker.start(0, tmp.resolve("broker"))) {
            String topic = "kafka://" + broker.bootstrapServers() + "/uploads";
            ServeCommand command = parse("serve", "--port", "0", "--sink", topic, "--direction", "from-hf",
                    "--config", hf.resolve("config.json").toString(), "--spool-dir", tmp.resolve("spool").toString());
            try (IngestServer server = command.start()) {
                HttpRequest put = HttpRequest.newBuilder(URI.create(server.baseUri() + "/v1/checkpoints/step-7"))
                        .PUT(HttpRequest.BodyPublishers.fromPublisher(HttpRequest.BodyPublishers.concat(
                                HttpRequest.BodyPublishers.ofFile(hf.resolve("model-00001-of-00003.safetensors")),
                                HttpRequest.BodyPublishers.ofFile(hf.resolve("model-00002-of-00003.safetensors")),
                                HttpRequest.BodyPublishers.ofFile(hf.resolve("model-00003-of-00003.safetensors")))))
                        .build();
                HttpResponse<String> r = HttpClient.newHttpClient().send(put, HttpResponse.BodyHandlers.ofString());

                assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
                assertThat(r.body()).contains("\"location\":\"" + topic + "?checkpoint=step-7\"");
            }
            Path out = tmp.resolve("native");
            Cli copy = Cli.run("copy", topic + "?checkpoint=step-7", out);
            assertThat(copy.exitCode()).as(copy.err()).isEqualTo(ExitCodes.OK);
            assertThat(Manifests.of(out)).isEqualTo(Manifests.of(Cli.REFERENCE_VECTORS.resolve("hy3-tiny/native")));
        }
    }

    /** Four ranks' DCP files uploaded as parts to a service publishing whole checkpoints to Kafka. */
    @Test
    void partsUploadedToAKafkaSinkArePublishedAsAWholeCheckpoint() throws Exception {
        Path save = Cli.REFERENCE_VECTORS.resolve("hy3-tiny-dcp/sharded");
        try (LocalKafkaBroker broker = LocalKafkaBroker.start(0, tmp.resolve("broker"))) {
            String topic = "kafka://" + broker.bootstrapServers() + "/parts";
            ServeCommand command = parse("serve", "--port", "0", "--sink", topic, "--direction", "from-hf",
                    "--config", save.resolve(".hf_metadata/config.json").toString(), "--spool-dir", tmp.resolve("spool").toString());
            try (IngestServer server = command.start()) {
                HttpClient client = HttpClient.newHttpClient();
                for (int r = 0; r < 4; r++) {
                    HttpRequest put = HttpRequest.newBuilder(URI.create(server.baseUri() + "/v1/checkpoints/step-8/parts/" + r + "?parts=4"))
                            .PUT(HttpRequest.BodyPublishers.ofFile(save.resolve(String.format("shard-%05d-model-00001-of-00001.safetensors", r + 1))))
                            .build();
                    HttpResponse<String> answer = client.send(put, HttpResponse.BodyHandlers.ofString());
                    assertThat(answer.statusCode()).as(answer.body()).isEqualTo(200);
                }
            }
            Path out = tmp.resolve("native");
            Cli copy = Cli.run("copy", topic + "?checkpoint=step-8", out);
            assertThat(copy.exitCode()).as(copy.err()).isEqualTo(ExitCodes.OK);
            assertThat(Manifests.of(out)).isEqualTo(Manifests.of(Cli.REFERENCE_VECTORS.resolve("hy3-tiny/native")));
        }
    }

    @Test
    void memoryAndHeaderLimitsTakeUnitsAndASlabMemoryOfZeroSpoolsEveryWeight() {
        ServeCommand withUnits = parse("serve", "--port", "0", "--sink", tmp.toString(), "--direction", "none",
                "--slab-memory", "256MiB", "--max-header-bytes", "2MB");
        assertThat(withUnits.slabMemory).isEqualTo(256L << 20);
        assertThat(withUnits.maxHeaderBytes).isEqualTo(2_000_000L);
        assertThat(parse("serve", "--port", "0", "--sink", tmp.toString(), "--direction", "none", "--slab-memory", "0").slabMemory)
                .isZero();
        assertThat(parse("serve", "--port", "0", "--sink", tmp.toString(), "--direction", "none").slabMemory)
                .isEqualTo(64L << 20);
        assertThatThrownBy(() -> parse("serve", "--port", "0", "--sink", tmp.toString(), "--direction", "none",
                "--max-header-bytes", "0")).isInstanceOf(CommandLine.ParameterException.class).hasMessageContaining("out of range");
    }

    @Test
    void anUnknownDirectionIsAUsageErrorNamingTheChoices() {
        int code = execute("serve", "--port", "0", "--sink", tmp.toString(), "--direction", "sideways");

        assertThat(code).isEqualTo(ExitCodes.USAGE);
        assertThat(err.toString()).contains("expected to-hf, from-hf or none");
    }
}
