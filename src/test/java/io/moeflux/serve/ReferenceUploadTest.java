package io.moeflux.serve;

import static io.moeflux.serve.TestServers.VECTORS;
import static io.moeflux.serve.TestServers.chunked;
import static io.moeflux.serve.TestServers.json;
import static io.moeflux.serve.TestServers.options;
import static io.moeflux.serve.TestServers.put;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assumptions.assumeThat;

import com.fasterxml.jackson.databind.JsonNode;
import io.moeflux.connect.safetensors.Manifests;
import io.moeflux.hy3.Hy3Options;
import io.moeflux.testing.TensorBytes;
import java.net.URLEncoder;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Uploads of the reference vectors over real HTTP, matched bit for bit with the reference outputs. */
class ReferenceUploadTest {
    static final Path NATIVE_IN = VECTORS.resolve("hy3-tiny-native/native/model.safetensors");
    static final Path NATIVE_TO_HF = VECTORS.resolve("hy3-tiny-native/hf");
    static final Path HF_IN = VECTORS.resolve("hy3-tiny/hf");
    static final Path HF_FROM_HF = VECTORS.resolve("hy3-tiny/native");
    static final String MODEL_QUERY = "num_hidden_layers=3&num_experts=8&moe_intermediate_size=16";

    @TempDir
    Path sinkDir;

    static Path[] hfShards() {
        return new Path[] {
            HF_IN.resolve("model-00001-of-00003.safetensors"),
            HF_IN.resolve("model-00002-of-00003.safetensors"),
            HF_IN.resolve("model-00003-of-00003.safetensors")};
    }

    static String excludeQuery() {
        return "&exclude_key_regex=" + URLEncoder.encode("^custom\\.exclude", StandardCharsets.UTF_8);
    }

    @Test
    void toHfUploadWithModelConfigInTheQueryMatchesTheReference() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.TO_HF, sinkDir))) {
            HttpResponse<String> r = put(server, "/v1/checkpoints/step-100?" + MODEL_QUERY + excludeQuery(), chunked(NATIVE_IN));

            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            JsonNode summary = json(r);
            assertThat(summary.get("state").asText()).isEqualTo("committed");
            assertThat(summary.get("bytes_received").asLong()).isEqualTo(Files.size(NATIVE_IN));
            assertThat(summary.get("files").asInt()).isEqualTo(1);
            assertThat(Manifests.of(sinkDir.resolve("step-100"))).isEqualTo(Manifests.of(NATIVE_TO_HF));
            assertThat(summary.get("tensors").asLong()).isEqualTo(Manifests.of(NATIVE_TO_HF).size());
            assertThat(json(TestServers.get(server, "/v1/checkpoints/step-100"))).isEqualTo(summary);
        }
    }

    @Test
    void fromHfUploadOfThreeShardsBackToBackWithServiceConfigMatchesTheReference() throws Exception {
        byte[] config = Files.readAllBytes(HF_IN.resolve("config.json"));
        try (IngestServer server = IngestServer.start(options(Direction.FROM_HF, sinkDir).withConfigJson(config))) {
            HttpResponse<String> r = put(server, "/v1/checkpoints/hy3-tiny", chunked(hfShards()));

            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            Path out = sinkDir.resolve("hy3-tiny");
            assertThat(Manifests.of(out)).isEqualTo(Manifests.of(HF_FROM_HF));
            assertThat(out.resolve("config.json")).hasBinaryContent(config);
            assertThat(TestServers.spoolInUse(sinkDir)).isEmpty();
        }
    }

    @Test
    void singleBlobUploadsArePlannedFromTheirHeaderAndMatchTheReferenceInBothDirections() throws Exception {
        Path hfFile = VECTORS.resolve("hy3-tiny-native/hf/model.safetensors");
        byte[] config = Files.readAllBytes(HF_IN.resolve("config.json"));
        try (IngestServer toHf = IngestServer.start(options(Direction.TO_HF, sinkDir.resolve("hf")));
                IngestServer fromHf = IngestServer.start(options(Direction.FROM_HF, sinkDir.resolve("native")).withConfigJson(config))) {
            HttpResponse<String> a = put(toHf, "/v1/checkpoints/one?single_blob=true&" + MODEL_QUERY + excludeQuery(), chunked(NATIVE_IN));
            HttpResponse<String> b = put(fromHf, "/v1/checkpoints/one?single_blob=true", chunked(hfFile));

            assertThat(a.statusCode()).as(a.body()).isEqualTo(200);
            assertThat(Manifests.of(sinkDir.resolve("hf/one"))).isEqualTo(Manifests.of(NATIVE_TO_HF));
            assertThat(b.statusCode()).as(b.body()).isEqualTo(200);
            // from-hf of to-hf's output gives back the native input, less the excluded key.
            var expected = new java.util.TreeMap<>(Manifests.of(VECTORS.resolve("hy3-tiny-native/native")));
            expected.remove("custom.exclude.weight");
            assertThat(Manifests.of(sinkDir.resolve("native/one"))).isEqualTo(expected);
        }
    }

    @Test
    void aSecondBlobInASingleBlobUploadGets400AndCommitsNothing() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, sinkDir))) {
            HttpResponse<String> r = put(server, "/v1/checkpoints/two?single_blob=true", chunked(hfShards()));

            assertThat(r.statusCode()).isEqualTo(400);
            assertThat(json(r).get("error").asText())
                    .isEqualTo("single_blob is set, but a second blob starts at body byte " + Files.size(hfShards()[0]));
            TestServers.awaitCleanup(sinkDir);
            assertThat(TestServers.sinkEntries(sinkDir)).isEmpty();
            assertThat(TestServers.spoolInUse(sinkDir)).isEmpty();
        }
    }

    @Test
    void tensorsStreamedOneBlobEachAsASaveHookSendsThemMatchTheReference() throws Exception {
        byte[] config = Files.readAllBytes(HF_IN.resolve("config.json"));
        Path body = sinkDir.resolve("per-tensor.bin");
        try (var out = Files.newOutputStream(body)) {
            for (io.moeflux.pipeline.TensorEvent e : io.moeflux.connect.safetensors.SafetensorsSource.open(HF_IN).tensors()
                    .collectList().block()) {
                out.write(io.moeflux.connect.safetensors.SafetensorsFormat.encodeHeader(List.of(e.tensor().info(e.fqn()))));
                out.write(TensorBytes.of(e.tensor()));
                e.release();
            }
        }
        try (IngestServer server = IngestServer.start(options(Direction.FROM_HF, sinkDir.resolve("out")).withConfigJson(config))) {
            HttpResponse<String> r = put(server, "/v1/checkpoints/streamed", chunked(body));

            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            assertThat(json(r).get("tensors_received").asLong()).isEqualTo(Manifests.of(HF_IN).size());
            assertThat(Manifests.of(sinkDir.resolve("out/streamed"))).isEqualTo(Manifests.of(HF_FROM_HF));
        }
    }

    @Test
    void serviceExclusionPatternAppliesWhenTheQueryGivesNone() throws Exception {
        IngestOptions options = options(Direction.TO_HF, sinkDir)
                .withHy3Options(Hy3Options.DEFAULTS.withExcludeKeyRegex("^custom\\.exclude"));
        try (IngestServer server = IngestServer.start(options)) {
            HttpResponse<String> r = put(server, "/v1/checkpoints/excluded?" + MODEL_QUERY, chunked(NATIVE_IN));

            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            assertThat(Manifests.of(sinkDir.resolve("excluded"))).isEqualTo(Manifests.of(NATIVE_TO_HF));
        }
    }

    @Test
    void severalConcurrentUploadsInBothDirectionsEachMatchTheReference() throws Exception {
        byte[] config = Files.readAllBytes(HF_IN.resolve("config.json"));
        try (IngestServer toHf = IngestServer.start(options(Direction.TO_HF, sinkDir.resolve("hf")));
                IngestServer fromHf = IngestServer.start(options(Direction.FROM_HF, sinkDir.resolve("native")).withConfigJson(config))) {
            List<CompletableFuture<HttpResponse<String>>> responses = new ArrayList<>();
            for (int i = 0; i < 4; i++) {
                responses.add(TestServers.client(toHf).sendAsync(java.net.http.HttpRequest.newBuilder(
                                java.net.URI.create(toHf.baseUri() + "/v1/checkpoints/c" + i + "?" + MODEL_QUERY + excludeQuery()))
                        .PUT(chunked(NATIVE_IN)).build(), HttpResponse.BodyHandlers.ofString()));
                responses.add(TestServers.client(fromHf).sendAsync(java.net.http.HttpRequest.newBuilder(
                                java.net.URI.create(fromHf.baseUri() + "/v1/checkpoints/c" + i))
                        .PUT(chunked(hfShards())).build(), HttpResponse.BodyHandlers.ofString()));
            }
            for (CompletableFuture<HttpResponse<String>> f : responses) {
                HttpResponse<String> r = f.get(60, TimeUnit.SECONDS);
                assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            }
            var expectedHf = Manifests.of(NATIVE_TO_HF);
            var expectedNative = Manifests.of(HF_FROM_HF);
            for (int i = 0; i < 4; i++) {
                assertThat(Manifests.of(sinkDir.resolve("hf/c" + i))).isEqualTo(expectedHf);
                assertThat(Manifests.of(sinkDir.resolve("native/c" + i))).isEqualTo(expectedNative);
            }
        }
    }

    @Test
    void curlUploadsInBothDirectionsMatchTheReference() throws Exception {
        assumeThat(curlInstalled()).as("curl is installed").isTrue();
        byte[] config = Files.readAllBytes(HF_IN.resolve("config.json"));
        Path body = sinkDir.resolve("hf-shards.bin");
        for (Path shard : hfShards()) {
            Files.write(body, Files.readAllBytes(shard), java.nio.file.StandardOpenOption.CREATE,
                    java.nio.file.StandardOpenOption.APPEND);
        }
        try (IngestServer toHf = IngestServer.start(options(Direction.TO_HF, sinkDir.resolve("hf")));
                IngestServer fromHf = IngestServer.start(options(Direction.FROM_HF, sinkDir.resolve("native")).withConfigJson(config))) {
            String toHfUrl = toHf.baseUri() + "/v1/checkpoints/curl?" + MODEL_QUERY + excludeQuery();
            assertThat(curl(NATIVE_IN, toHfUrl)).contains("\"state\":\"committed\"");
            assertThat(curl(body, fromHf.baseUri() + "/v1/checkpoints/curl")).contains("\"state\":\"committed\"");

            assertThat(Manifests.of(sinkDir.resolve("hf/curl"))).isEqualTo(Manifests.of(NATIVE_TO_HF));
            assertThat(Manifests.of(sinkDir.resolve("native/curl"))).isEqualTo(Manifests.of(HF_FROM_HF));
        }
    }

    static boolean curlInstalled() {
        try {
            return new ProcessBuilder("curl", "--version").redirectErrorStream(true).start().waitFor() == 0;
        } catch (java.io.IOException | InterruptedException e) {
            return false;
        }
    }

    /** {@code curl -T file} with chunked transfer encoding, as the README shows; returns the response body. */
    static String curl(Path file, String url) throws Exception {
        Process p = new ProcessBuilder("curl", "-sS", "--fail-with-body", "-T", file.toString(),
                "-H", "Transfer-Encoding: chunked", url).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor()).as(out).isZero();
        return out;
    }
}
