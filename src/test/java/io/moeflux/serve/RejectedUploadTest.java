package io.moeflux.serve;

import static io.moeflux.serve.ReferenceUploadTest.MODEL_QUERY;
import static io.moeflux.serve.ReferenceUploadTest.NATIVE_IN;
import static io.moeflux.serve.TestServers.get;
import static io.moeflux.serve.TestServers.json;
import static io.moeflux.serve.TestServers.options;
import static io.moeflux.serve.TestServers.put;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.net.http.HttpRequest.BodyPublishers;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.ValueSource;

/** Uploads the service refuses, aborted uploads, and what they leave behind: nothing. */
class RejectedUploadTest {
    @TempDir
    Path sinkDir;

    private IngestServer server;

    @AfterEach
    void stop() {
        if (server != null) {
            server.close();
        }
    }

    private IngestServer start(IngestOptions options) {
        server = IngestServer.start(options);
        return server;
    }

    /** Nothing committed, and what was staged or spooled is cleaned up (right after the response, not before it). */
    private void assertNothingWritten() throws Exception {
        TestServers.awaitCleanup(sinkDir);
        assertThat(TestServers.sinkEntries(sinkDir)).isEmpty();
        assertThat(TestServers.spoolInUse(sinkDir)).isEmpty();
    }

    private static byte[] nativeBytes() throws IOException {
        return Files.readAllBytes(NATIVE_IN);
    }

    private HttpResponse<String> upload(String id, byte[] body, String... headers) throws Exception {
        return put(server, "/v1/checkpoints/" + id + "?" + MODEL_QUERY,
                BodyPublishers.fromPublisher(BodyPublishers.ofByteArray(body)), headers);
    }

    @Test
    void everyRequestWithoutTheRightBearerTokenGets401AndWritesNothing() throws Exception {
        start(options(Direction.TO_HF, sinkDir).withToken("s3cret\n"));

        HttpResponse<String> none = upload("ckpt", nativeBytes());
        HttpResponse<String> wrong = upload("ckpt", nativeBytes(), "Authorization", "Bearer guess");

        assertThat(none.statusCode()).isEqualTo(401);
        assertThat(none.headers().firstValue("WWW-Authenticate")).hasValue("Bearer");
        assertThat(json(none).get("error").asText()).contains("bearer token");
        assertThat(wrong.statusCode()).isEqualTo(401);
        assertThat(get(server, "/healthz").statusCode()).isEqualTo(401);
        assertThat(get(server, "/metrics").statusCode()).isEqualTo(401);
        assertThat(get(server, "/v1/checkpoints/ckpt").statusCode()).isEqualTo(401);
        assertNothingWritten();

        HttpResponse<String> right = upload("ckpt", nativeBytes(), "Authorization", "Bearer s3cret");
        assertThat(right.statusCode()).as(right.body()).isEqualTo(200);
        assertThat(get(server, "/healthz", "Authorization", "Bearer s3cret").statusCode()).isEqualTo(200);
    }

    @ParameterizedTest
    @ValueSource(strings = {"..", ".hidden", "a%20b", "..%2F..%2Fetc", "a%2Fb", "%2E%2E", "-rf", ":x"})
    void checkpointIdsThatAreNotPlainNamesGet400(String id) throws Exception {
        start(options(Direction.TO_HF, sinkDir));

        String response = rawRequest("PUT /v1/checkpoints/" + id + "?" + MODEL_QUERY + " HTTP/1.1\r\nHost: localhost\r\n"
                + "Content-Length: 0\r\nConnection: close\r\n\r\n", new byte[0]);

        assertThat(response).startsWith("HTTP/1.1 400").contains("invalid checkpoint id");
        assertNothingWritten();
    }

    @Test
    void requestHeadersBeyond16KiBAreRefusedBeforeTheHandlerRuns() throws Exception {
        start(options(Direction.NONE, sinkDir));

        String response = rawRequest("PUT /v1/checkpoints/big-headers HTTP/1.1\r\nHost: localhost\r\nX-Padding: "
                + "a".repeat(20_000) + "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", new byte[0]);

        assertThat(response).startsWith("HTTP/1.1 431");
        assertThat(get(server, "/v1/checkpoints/big-headers").statusCode()).isEqualTo(404);
        assertNothingWritten();
    }

    @Test
    void aTooLongIdGets400() throws Exception {
        start(options(Direction.TO_HF, sinkDir));

        HttpResponse<String> r = upload("x".repeat(201), nativeBytes());

        assertThat(r.statusCode()).isEqualTo(400);
        assertNothingWritten();
    }

    @Test
    void aBlobTruncatedInsideItsDataGets400NamingTheBlob() throws Exception {
        start(options(Direction.TO_HF, sinkDir));
        byte[] whole = nativeBytes();

        HttpResponse<String> r = upload("cut", Arrays.copyOf(whole, whole.length - 100));

        assertThat(r.statusCode()).isEqualTo(400);
        assertThat(json(r).get("error").asText()).contains("blob 1").contains("truncated").contains("short of its " + whole.length);
        assertThat(json(r).get("state").asText()).isEqualTo("failed");
        assertNothingWritten();
    }

    @Test
    void aSecondBlobTruncatedInsideItsHeaderGets400NamingIt() throws Exception {
        start(options(Direction.TO_HF, sinkDir));
        byte[] whole = nativeBytes();
        byte[] body = Arrays.copyOf(whole, whole.length + 20);
        System.arraycopy(whole, 0, body, whole.length, 20);

        HttpResponse<String> r = upload("cut", body);

        assertThat(r.statusCode()).isEqualTo(400);
        assertThat(json(r).get("error").asText()).contains("blob 2 (at body byte " + whole.length + ")").contains("inside its header");
        assertNothingWritten();
    }

    @Test
    void garbageGets400NamingTheImpossibleHeaderLength() throws Exception {
        start(options(Direction.TO_HF, sinkDir));

        HttpResponse<String> r = upload("junk", "this is not a safetensors file at all".getBytes(StandardCharsets.US_ASCII));

        assertThat(r.statusCode()).isEqualTo(400);
        assertThat(json(r).get("error").asText()).contains("blob 1").contains("header length");
        assertNothingWritten();
    }

    @Test
    void aHeaderLargerThanTheServiceLimitIsRefusedFromItsLengthPrefix() throws Exception {
        start(options(Direction.NONE, sinkDir).withMaxHeaderBytes(1024));
        byte[] prefix = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(50_000_000).array();

        HttpResponse<String> r = upload("big", prefix);

        assertThat(r.statusCode()).isEqualTo(413);
        assertThat(json(r).get("error").asText()).contains("header length 50000000 exceeds this service's limit of 1024");
        assertNothingWritten();
    }

    @Test
    void aHeaderThatIsNotValidJsonGets400() throws Exception {
        start(options(Direction.NONE, sinkDir));
        byte[] json = "{\"a\": {\"dtype\": \"BF16\",".getBytes(StandardCharsets.US_ASCII);
        ByteBuffer body = ByteBuffer.allocate(8 + json.length).order(ByteOrder.LITTLE_ENDIAN).putLong(json.length).put(json);

        HttpResponse<String> r = upload("badjson", body.array());

        assertThat(r.statusCode()).isEqualTo(400);
        assertThat(json(r).get("error").asText()).contains("blob 1").contains("not valid JSON");
        assertNothingWritten();
    }

    @Test
    void anEmptyBodyGets400() throws Exception {
        start(options(Direction.NONE, sinkDir));

        HttpResponse<String> r = upload("empty", new byte[0]);

        assertThat(r.statusCode()).isEqualTo(400);
        assertThat(json(r).get("error").asText()).contains("empty body");
        assertNothingWritten();
    }

    @Test
    void aConversionWithoutModelConfigGets400BeforeTheBodyIsRead() throws Exception {
        start(options(Direction.FROM_HF, sinkDir));

        HttpResponse<String> r = put(server, "/v1/checkpoints/x", BodyPublishers.ofByteArray(nativeBytes()));
        HttpResponse<String> partial = put(server, "/v1/checkpoints/x?num_experts=8", BodyPublishers.ofByteArray(nativeBytes()));

        assertThat(r.statusCode()).isEqualTo(400);
        assertThat(json(r).get("error").asText()).contains("needs the model config");
        assertThat(partial.statusCode()).isEqualTo(400);
        assertThat(json(partial).get("error").asText()).contains("num_hidden_layers is missing");
        assertNothingWritten();
    }

    @Test
    void anUploadToACommittedIdGets409AndLeavesTheCheckpointAlone() throws Exception {
        start(options(Direction.TO_HF, sinkDir));
        assertThat(upload("once", nativeBytes()).statusCode()).isEqualTo(200);
        byte[] before = Files.readAllBytes(sinkDir.resolve("once/model.safetensors"));

        HttpResponse<String> again = upload("once", nativeBytes());

        assertThat(again.statusCode()).isEqualTo(409);
        assertThat(sinkDir.resolve("once/model.safetensors")).hasBinaryContent(before);
        assertThat(TestServers.sinkEntries(sinkDir)).containsExactly("once");
    }

    @Test
    void aClientThatDisconnectsMidBlobCommitsNothing() throws Exception {
        start(options(Direction.TO_HF, sinkDir));
        byte[] whole = nativeBytes();

        abortAfter("gone", Arrays.copyOf(whole, whole.length / 2));

        assertThat(TestServers.awaitEnd(server, "gone").get("state").asText()).isEqualTo("aborted");
        assertNothingWritten();
    }

    @Test
    void aClientThatDisconnectsAtABlobBoundaryBeforeTheLastChunkCommitsNothing() throws Exception {
        start(options(Direction.TO_HF, sinkDir));

        abortAfter("gone", nativeBytes());

        assertThat(TestServers.awaitEnd(server, "gone").get("state").asText()).isEqualTo("aborted");
        assertNothingWritten();
    }

    @ParameterizedTest
    @EnumSource(value = Direction.class, names = {"NONE", "TO_HF"})
    void aSingleBlobUploadWrittenInPlaceThatDisconnectsMidBlobCommitsNothing(Direction direction) throws Exception {
        start(options(direction, sinkDir));
        byte[] whole = nativeBytes();

        abortAfter("gone", "single_blob=true&", Arrays.copyOf(whole, whole.length / 2));

        assertThat(TestServers.awaitEnd(server, "gone").get("state").asText()).isEqualTo("aborted");
        assertNothingWritten();
    }

    @Test
    void aFromHfSingleBlobUploadCutOffAmidItsExpertSlabsCommitsNothing() throws Exception {
        start(options(Direction.FROM_HF, sinkDir));
        byte[] whole = Files.readAllBytes(TestServers.VECTORS.resolve("hy3-tiny-native/hf/model.safetensors"));

        abortAfter("gone", "single_blob=true&", Arrays.copyOf(whole, whole.length * 2 / 3));

        assertThat(TestServers.awaitEnd(server, "gone").get("state").asText()).isEqualTo("aborted");
        assertNothingWritten();
    }

    @Test
    void aSingleBlobUploadTruncatedInsideItsDataGets400AndLeavesNothing() throws Exception {
        start(options(Direction.NONE, sinkDir));
        byte[] whole = nativeBytes();

        HttpResponse<String> r = put(server, "/v1/checkpoints/cut?single_blob=true",
                BodyPublishers.fromPublisher(BodyPublishers.ofByteArray(Arrays.copyOf(whole, whole.length - 100))));

        assertThat(r.statusCode()).isEqualTo(400);
        assertThat(json(r).get("error").asText()).contains("truncated");
        assertNothingWritten();
    }

    @Test
    void aSingleBlobUploadTheDiskCannotHoldGets507BeforeItsDataIsSent() throws Exception {
        start(options(Direction.NONE, sinkDir));
        long elements = 1L << 49;
        org.junit.jupiter.api.Assumptions.assumeTrue(Files.getFileStore(sinkDir).getUsableSpace() < 2 * elements);
        byte[] json = ("{\"model.huge\":{\"dtype\":\"BF16\",\"shape\":[" + elements + "],\"data_offsets\":[0,"
                + 2 * elements + "]}}").getBytes(StandardCharsets.US_ASCII);
        ByteBuffer headerOnly = ByteBuffer.allocate(8 + json.length).order(ByteOrder.LITTLE_ENDIAN).putLong(json.length).put(json);

        HttpResponse<String> r = put(server, "/v1/checkpoints/huge?single_blob=true",
                BodyPublishers.fromPublisher(BodyPublishers.ofByteArray(headerOnly.array())));

        assertThat(r.statusCode()).isEqualTo(507);
        assertThat(json(r).get("error").asText()).contains("model.safetensors: no room for its").contains("bytes free");
        assertThat(json(r).get("state").asText()).isEqualTo("failed");
        assertNothingWritten();
    }

    @Test
    void aConnectionThatNeverCompletesItsRequestHeadersIsClosedAfterTheHeaderTimeout() throws Exception {
        start(options(Direction.NONE, sinkDir).withTimeouts(Duration.ofMillis(300), Duration.ofSeconds(30)));
        try (Socket socket = new Socket("127.0.0.1", server.port())) {
            socket.setSoTimeout(10_000);
            socket.getOutputStream().write("PUT /v1/checkpoints/slow HTTP/1.1\r\nHost: localhost\r\n"
                    .getBytes(StandardCharsets.US_ASCII));
            long start = System.nanoTime();

            assertThat(socket.getInputStream().read()).as("the server closed the connection").isEqualTo(-1);
            assertThat(Duration.ofNanos(System.nanoTime() - start)).isLessThan(Duration.ofSeconds(5));
        }
        assertNothingWritten();
    }

    @Test
    void anUploadWhoseBodyStopsIsAbortedAfterTheIdleTimeoutAndItsIdCanBeSentAgain() throws Exception {
        start(options(Direction.TO_HF, sinkDir).withTimeouts(Duration.ofSeconds(30), Duration.ofMillis(300)));
        byte[] whole = nativeBytes();
        try (Socket socket = new Socket("127.0.0.1", server.port())) {
            OutputStream out = socket.getOutputStream();
            byte[] half = Arrays.copyOf(whole, whole.length / 2);
            out.write(("PUT /v1/checkpoints/stalled?" + MODEL_QUERY + " HTTP/1.1\r\nHost: localhost\r\n"
                    + "Transfer-Encoding: chunked\r\n\r\n" + Integer.toHexString(half.length) + "\r\n")
                    .getBytes(StandardCharsets.US_ASCII));
            out.write(half);
            out.write("\r\n".getBytes(StandardCharsets.US_ASCII));
            out.flush();

            // The client stalls and keeps its connection open: the service gives up on it, not the other way round.
            JsonNode ended = TestServers.awaitEnd(server, "stalled");
            assertThat(ended.get("state").asText()).isEqualTo("aborted");
            assertThat(ended.get("error").asText()).contains("--body-idle-timeout");
            assertNothingWritten();

            HttpResponse<String> again = upload("stalled", whole);
            assertThat(again.statusCode()).as(again.body()).isEqualTo(200);
        }
    }

    private void abortAfter(String id, byte[] bytes) throws Exception {
        abortAfter(id, "", bytes);
    }

    /**
     * Sends {@code bytes} as one chunk of a chunked upload (query {@code query} before the model's),
     * then closes the connection without the last chunk.
     */
    private void abortAfter(String id, String query, byte[] bytes) throws Exception {
        try (Socket socket = new Socket("127.0.0.1", server.port())) {
            OutputStream out = socket.getOutputStream();
            out.write(("PUT /v1/checkpoints/" + id + "?" + query + MODEL_QUERY + " HTTP/1.1\r\nHost: localhost\r\n"
                    + "Transfer-Encoding: chunked\r\n\r\n" + Integer.toHexString(bytes.length) + "\r\n")
                    .getBytes(StandardCharsets.US_ASCII));
            out.write(bytes);
            out.write("\r\n".getBytes(StandardCharsets.US_ASCII));
            out.flush();
            // Wait until the server has taken the bytes in, so the disconnect hits a running upload.
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (receivedBytes(id) < bytes.length) {
                assertThat(System.nanoTime()).isLessThan(deadline);
                Thread.sleep(10);
            }
        }
    }

    private long receivedBytes(String id) throws Exception {
        HttpResponse<String> r = get(server, "/v1/checkpoints/" + id);
        return r.statusCode() == 200 ? json(r).get("bytes_received").asLong() : -1;
    }

    private String rawRequest(String head, byte[] body) throws IOException {
        try (Socket socket = new Socket("127.0.0.1", server.port())) {
            OutputStream out = socket.getOutputStream();
            out.write(head.getBytes(StandardCharsets.US_ASCII));
            out.write(body);
            out.flush();
            InputStream in = socket.getInputStream();
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        }
    }
}
