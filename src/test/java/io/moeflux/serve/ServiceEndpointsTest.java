package io.moeflux.serve;

import static io.moeflux.serve.ReferenceUploadTest.MODEL_QUERY;
import static io.moeflux.serve.ReferenceUploadTest.NATIVE_IN;
import static io.moeflux.serve.TestServers.get;
import static io.moeflux.serve.TestServers.json;
import static io.moeflux.serve.TestServers.options;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.OutputStream;
import java.net.Socket;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpRequest.BodyPublishers;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Status, health and metrics, observed while an upload runs and after it. */
class ServiceEndpointsTest {
    @TempDir
    Path sinkDir;

    @Test
    void healthzAnswersOk() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, sinkDir))) {
            HttpResponse<String> r = get(server, "/healthz");

            assertThat(r.statusCode()).isEqualTo(200);
            assertThat(json(r).get("status").asText()).isEqualTo("ok");
        }
    }

    @Test
    void healthzAnswersHeadToo() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, sinkDir))) {
            HttpResponse<Void> r = TestServers.client(server).send(HttpRequest.newBuilder(URI.create(server.baseUri() + "/healthz"))
                    .method("HEAD", HttpRequest.BodyPublishers.noBody()).build(), HttpResponse.BodyHandlers.discarding());

            assertThat(r.statusCode()).isEqualTo(200);
        }
    }

    @Test
    void aKnownPathWithAnotherMethodIs405NamingTheMethodsItTakesAndAnUnknownPathIs404() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, sinkDir))) {
            HttpResponse<String> post = TestServers.client(server).send(HttpRequest.newBuilder(URI.create(server.baseUri() + "/v1/checkpoints/x"))
                    .POST(HttpRequest.BodyPublishers.noBody()).build(), HttpResponse.BodyHandlers.ofString());
            HttpResponse<String> delete = TestServers.client(server).send(HttpRequest.newBuilder(URI.create(server.baseUri() + "/healthz"))
                    .DELETE().build(), HttpResponse.BodyHandlers.ofString());
            HttpResponse<String> unknown = get(server, "/v2/nothing");
            HttpResponse<String> part = get(server, "/v1/checkpoints/x/parts/0");

            assertThat(post.statusCode()).isEqualTo(405);
            assertThat(post.headers().firstValue("Allow")).hasValue("GET, PUT, DELETE");
            assertThat(part.statusCode()).isEqualTo(405);
            assertThat(part.headers().firstValue("Allow")).hasValue("PUT");
            assertThat(json(post).get("error").asText()).contains("POST is not allowed");
            assertThat(delete.statusCode()).isEqualTo(405);
            assertThat(delete.headers().firstValue("Allow")).hasValue("GET, HEAD");
            assertThat(unknown.statusCode()).isEqualTo(404);
            assertThat(json(unknown).get("error").asText()).contains("no endpoint /v2/nothing");
        }
    }

    @Test
    void theBearerSchemeIsMatchedWhateverItsCase() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, sinkDir).withToken("s3cret"))) {
            assertThat(get(server, "/healthz", "Authorization", "bearer s3cret").statusCode()).isEqualTo(200);
            assertThat(get(server, "/healthz", "Authorization", "BEARER s3cret").statusCode()).isEqualTo(200);
            assertThat(get(server, "/healthz", "Authorization", "Bearer S3CRET").statusCode()).isEqualTo(401);
            assertThat(get(server, "/healthz", "Authorization", "Basic s3cret").statusCode()).isEqualTo(401);
        }
    }

    @Test
    void idsWithAColonAreAcceptedAsKafkaCheckpointIdsAre() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, sinkDir))) {
            HttpResponse<String> r = TestServers.put(server, "/v1/checkpoints/run:step-1", BodyPublishers.ofByteArray(Files.readAllBytes(NATIVE_IN)));

            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            assertThat(sinkDir.resolve("run:step-1")).isDirectory();
        }
    }

    @Test
    void statusOfAnUnknownCheckpointIs404() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, sinkDir))) {
            assertThat(get(server, "/v1/checkpoints/never").statusCode()).isEqualTo(404);
        }
    }

    @Test
    void aRunningUploadReportsProgressHoldsItsIdAndCommitsWhenTheBodyEnds() throws Exception {
        byte[] file = Files.readAllBytes(NATIVE_IN);
        int firstPart = file.length / 2;
        try (IngestServer server = IngestServer.start(options(Direction.TO_HF, sinkDir));
                Socket socket = new Socket("127.0.0.1", server.port())) {
            OutputStream out = socket.getOutputStream();
            out.write(("PUT /v1/checkpoints/live?" + MODEL_QUERY + " HTTP/1.1\r\nHost: localhost\r\n"
                    + "Transfer-Encoding: chunked\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
            writeChunk(out, file, 0, firstPart);
            JsonNode running = awaitReceived(server, firstPart);

            assertThat(running.get("state").asText()).isEqualTo("receiving");
            assertThat(running.get("tensors_received").asLong()).isPositive();
            assertThat(metric(server, "moeflux_ingest_active_uploads")).isEqualTo(1.0);
            HttpResponse<String> second = TestServers.put(server, "/v1/checkpoints/live?" + MODEL_QUERY,
                    BodyPublishers.ofByteArray(file));
            assertThat(second.statusCode()).isEqualTo(409);
            assertThat(json(second).get("error").asText()).contains("being uploaded already");

            writeChunk(out, file, firstPart, file.length - firstPart);
            out.write("0\r\n\r\n".getBytes(StandardCharsets.US_ASCII));
            out.flush();
            String response = new String(socket.getInputStream().readNBytes(12), StandardCharsets.US_ASCII);

            assertThat(response).isEqualTo("HTTP/1.1 200");
            JsonNode done = TestServers.awaitEnd(server, "live");
            assertThat(done.get("state").asText()).isEqualTo("committed");
            assertThat(done.get("bytes_received").asLong()).isEqualTo(file.length);
            assertThat(done.get("tensors_written").asLong()).isEqualTo(done.get("tensors").asLong());
            assertThat(done.get("bytes_written").asLong()).isEqualTo(done.get("bytes").asLong());
        }
    }

    @Test
    void metricsCountBytesTensorsUploadsAndConversionTimeInPrometheusText() throws Exception {
        byte[] file = Files.readAllBytes(NATIVE_IN);
        try (IngestServer server = IngestServer.start(options(Direction.TO_HF, sinkDir))) {
            HttpResponse<String> ok = TestServers.put(server, "/v1/checkpoints/m1?" + MODEL_QUERY,
                    BodyPublishers.fromPublisher(BodyPublishers.ofByteArray(file)));
            TestServers.put(server, "/v1/checkpoints/m2?" + MODEL_QUERY,
                    BodyPublishers.fromPublisher(BodyPublishers.ofByteArray("garbage!".getBytes(StandardCharsets.US_ASCII))));
            JsonNode summary = json(ok);

            HttpResponse<String> metrics = get(server, "/metrics");

            assertThat(metrics.headers().firstValue("Content-Type")).hasValueSatisfying(v -> assertThat(v).startsWith("text/plain"));
            assertThat(metric(server, "moeflux_ingest_received_bytes_total")).isEqualTo(file.length + 8.0);
            assertThat(metric(server, "moeflux_ingest_written_bytes_total")).isEqualTo(summary.get("bytes").asDouble());
            assertThat(metric(server, "moeflux_ingest_written_tensors_total")).isEqualTo(summary.get("tensors").asDouble());
            assertThat(metric(server, "moeflux_ingest_received_tensors_total")).isPositive();
            assertThat(metric(server, "moeflux_ingest_active_uploads")).isZero();
            assertThat(metric(server, "moeflux_ingest_conversion_seconds_count{outcome=\"committed\"}")).isEqualTo(1.0);
            assertThat(metric(server, "moeflux_ingest_conversion_seconds_count{outcome=\"failed\"}")).isEqualTo(1.0);
        }
    }

    private static void writeChunk(OutputStream out, byte[] bytes, int from, int length) throws Exception {
        out.write((Integer.toHexString(length) + "\r\n").getBytes(StandardCharsets.US_ASCII));
        out.write(bytes, from, length);
        out.write("\r\n".getBytes(StandardCharsets.US_ASCII));
        out.flush();
    }

    /**
     * Bytes are counted as the socket delivers them and tensors once the parser has cut them out, on
     * another thread, so the wait is for both.
     */
    private static JsonNode awaitReceived(IngestServer server, long bytes) throws Exception {
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (true) {
            HttpResponse<String> r = get(server, "/v1/checkpoints/live");
            if (r.statusCode() == 200 && json(r).get("bytes_received").asLong() >= bytes
                    && json(r).get("tensors_received").asLong() > 0) {
                return json(r);
            }
            assertThat(System.nanoTime()).isLessThan(deadline);
            Thread.sleep(10);
        }
    }

    /** A sample's value from the Prometheus text, by its name and labels as printed. */
    private static double metric(IngestServer server, String sample) throws Exception {
        for (String line : get(server, "/metrics").body().split("\n")) {
            if (line.startsWith(sample + " ")) {
                return Double.parseDouble(line.substring(sample.length() + 1).trim());
            }
        }
        throw new AssertionError("no sample " + sample + " in /metrics");
    }
}
