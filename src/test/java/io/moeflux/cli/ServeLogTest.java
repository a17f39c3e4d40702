package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.OutputStream;
import java.net.Socket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** What a running service writes to its log: one line per upload, whatever its end, and no stack traces. */
class ServeLogTest {
    private static final Path NATIVE = Cli.REFERENCE_VECTORS.resolve("hy3-tiny-native/native/model.safetensors");
    private static final String MODEL = "num_hidden_layers=3&num_experts=8&moe_intermediate_size=16";

    @TempDir
    Path dir;

    private static List<String> uploadLines(Path log) throws Exception {
        return Files.readAllLines(log).stream().filter(l -> l.startsWith("moeflux serve: upload ")).toList();
    }

    @Test
    void eachUploadEndsInOneLogLineAndADisconnectLogsNoStackTrace() throws Exception {
        Path log = dir.resolve("serve.log");
        Process serve = ChildMoeflux.start(log, "serve", "--port", "0", "--sink", dir.resolve("sink"), "--direction", "to-hf");
        try {
            URI base = ChildMoeflux.awaitListening(serve, log);
            HttpClient client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
            byte[] whole = Files.readAllBytes(NATIVE);
            HttpResponse<String> ok = client.send(HttpRequest.newBuilder(base.resolve("/v1/checkpoints/good?" + MODEL))
                    .PUT(HttpRequest.BodyPublishers.ofByteArray(whole)).build(), HttpResponse.BodyHandlers.ofString());
            assertThat(ok.statusCode()).as(ok.body()).isEqualTo(200);
            HttpResponse<String> again = client.send(HttpRequest.newBuilder(base.resolve("/v1/checkpoints/good?" + MODEL))
                    .PUT(HttpRequest.BodyPublishers.ofByteArray(whole)).build(), HttpResponse.BodyHandlers.ofString());
            assertThat(again.statusCode()).isEqualTo(409);
            assertThat(again.body()).contains("committed already").doesNotContain(dir.toString()).doesNotContain("--force");
            HttpResponse<String> status = client.send(HttpRequest.newBuilder(base.resolve("/v1/checkpoints/good")).build(),
                    HttpResponse.BodyHandlers.ofString());
            assertThat(status.body()).contains("\"state\":\"committed\"");

            try (Socket socket = new Socket(base.getHost(), base.getPort())) {
                OutputStream out = socket.getOutputStream();
                byte[] half = Arrays.copyOf(whole, whole.length / 2);
                out.write(("PUT /v1/checkpoints/gone?" + MODEL + " HTTP/1.1\r\nHost: localhost\r\n"
                        + "Transfer-Encoding: chunked\r\n\r\n" + Integer.toHexString(half.length) + "\r\n")
                        .getBytes(StandardCharsets.US_ASCII));
                out.write(half);
                out.flush();
                Thread.sleep(200);
            }

            long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
            while (uploadLines(log).size() < 3 && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
            Thread.sleep(300);
            assertThat(uploadLines(log)).hasSize(3);
            assertThat(uploadLines(log).get(0)).startsWith("moeflux serve: upload good committed: ");
            assertThat(uploadLines(log).get(1)).startsWith("moeflux serve: upload good committed: ").contains("committed already");
            assertThat(uploadLines(log).get(2)).startsWith("moeflux serve: upload gone aborted: ");
            assertThat(Files.readString(log)).doesNotContain("\tat ").doesNotContain("Exception");
        } finally {
            serve.destroy();
            serve.waitFor(30, TimeUnit.SECONDS);
        }
    }
}
