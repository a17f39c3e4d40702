package io.moeflux.serve;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.moeflux.connect.http.SpoolFiles;
import io.moeflux.connect.safetensors.SafetensorsSink;
import io.moeflux.connect.safetensors.SafetensorsSinkOptions;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.WeakHashMap;
import java.util.stream.Stream;

/** Servers writing real checkpoint folders, and a JDK HTTP client talking to them. */
final class TestServers {
    static final Path VECTORS = Path.of("../pipeline/src/test/resources/reference-vectors");
    static final ObjectMapper JSON = new ObjectMapper();
    /**
     * A client per server: a client shared by every test would keep connections to servers already
     * closed, and a later server given the same ephemeral port could be sent a request down one of them.
     */
    private static final Map<IngestServer, HttpClient> CLIENTS = Collections.synchronizedMap(new WeakHashMap<>());

    static HttpClient client(IngestServer server) {
        return CLIENTS.computeIfAbsent(server, s -> HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build());
    }

    private TestServers() {}

    static CheckpointSinks folders(Path sinkDir) {
        return (id, progress) -> SafetensorsSink.create(SafetensorsSinkOptions.to(sinkDir.resolve(id)).withProgress(progress));
    }

    static IngestOptions options(Direction direction, Path sinkDir) {
        return IngestOptions.defaults(0, direction, folders(sinkDir), sinkDir.resolve(".moeflux-spool"));
    }

    /** A body sent with chunked transfer encoding, as a streaming client sends it: no length up front. */
    static HttpRequest.BodyPublisher chunked(Path... files) throws IOException {
        HttpRequest.BodyPublisher[] parts = new HttpRequest.BodyPublisher[files.length];
        for (int i = 0; i < files.length; i++) {
            parts[i] = HttpRequest.BodyPublishers.ofFile(files[i]);
        }
        return HttpRequest.BodyPublishers.fromPublisher(HttpRequest.BodyPublishers.concat(parts));
    }

    static HttpResponse<String> put(IngestServer server, String pathAndQuery, HttpRequest.BodyPublisher body, String... headers)
            throws IOException, InterruptedException {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(server.baseUri() + pathAndQuery)).PUT(body)
                .timeout(Duration.ofSeconds(60));
        if (headers.length > 0) {
            b.headers(headers);
        }
        return client(server).send(b.build(), HttpResponse.BodyHandlers.ofString());
    }

    static HttpResponse<String> get(IngestServer server, String path, String... headers) throws IOException, InterruptedException {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create(server.baseUri() + path)).GET().timeout(Duration.ofSeconds(60));
        if (headers.length > 0) {
            b.headers(headers);
        }
        return client(server).send(b.build(), HttpResponse.BodyHandlers.ofString());
    }

    static JsonNode json(HttpResponse<String> response) throws IOException {
        return JSON.readTree(response.body());
    }

    /** What the sink folder holds besides the spool folder: committed checkpoints and leftover staging folders. */
    static List<String> sinkEntries(Path sinkDir) throws IOException {
        try (Stream<Path> s = Files.list(sinkDir)) {
            return s.map(p -> p.getFileName().toString()).filter(n -> !n.equals(".moeflux-spool")).sorted().toList();
        }
    }

    /** What the sink's spool folder still holds (see {@link SpoolFiles#inUse}). */
    static List<String> spoolInUse(Path sinkDir) throws IOException {
        return SpoolFiles.inUse(sinkDir.resolve(".moeflux-spool"));
    }

    /**
     * Waits until no staging folder or spool file is left, and none has appeared 100 ms later: a failed upload
     * cleans up as its pipeline winds down, and a disconnect can race the sink's start, whose staging folder
     * then appears just after the upload is reported aborted and goes again with the cancel.
     */
    static void awaitCleanup(Path sinkDir) throws Exception {
        long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        int cleanSightings = 0;
        while (cleanSightings < 2 && System.nanoTime() < deadline) {
            boolean clean = sinkEntries(sinkDir).stream().noneMatch(n -> n.contains(".partial-")) && spoolInUse(sinkDir).isEmpty();
            cleanSightings = clean ? cleanSightings + 1 : 0;
            Thread.sleep(clean ? 100 : 10);
        }
    }

    /** Waits until an upload has ended (committed, failed or aborted) and returns its status. */
    static JsonNode awaitEnd(IngestServer server, String id) throws Exception {
        long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
        while (true) {
            HttpResponse<String> r = get(server, "/v1/checkpoints/" + id);
            if (r.statusCode() == 200 && !json(r).get("state").asText().equals("receiving")) {
                return json(r);
            }
            assertThat(System.nanoTime()).as("upload %s still running", id).isLessThan(deadline);
            Thread.sleep(20);
        }
    }
}
