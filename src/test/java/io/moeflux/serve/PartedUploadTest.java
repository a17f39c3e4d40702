package io.moeflux.serve;

import static io.moeflux.serve.ReferenceUploadTest.HF_FROM_HF;
import static io.moeflux.serve.ReferenceUploadTest.HF_IN;
import static io.moeflux.serve.TestServers.JSON;
import static io.moeflux.serve.TestServers.VECTORS;
import static io.moeflux.serve.TestServers.awaitCleanup;
import static io.moeflux.serve.TestServers.awaitEnd;
import static io.moeflux.serve.TestServers.chunked;
import static io.moeflux.serve.TestServers.client;
import static io.moeflux.serve.TestServers.get;
import static io.moeflux.serve.TestServers.json;
import static io.moeflux.serve.TestServers.options;
import static io.moeflux.serve.TestServers.put;
import static io.moeflux.serve.TestServers.sinkEntries;
import static io.moeflux.serve.TestServers.spoolInUse;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.moeflux.connect.safetensors.Manifests;
import io.moeflux.connect.safetensors.SafetensorsSource;
import io.moeflux.connect.safetensors.ShardedSaves;
import io.moeflux.pipeline.CheckpointSink;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.Box;
import io.moeflux.tensor.TensorInfo;
import java.io.OutputStream;
import java.net.Socket;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Checkpoints uploaded in parts, one per rank: the reference's four-rank DCP save, each rank's file sent as
 * it is, commits the reference checkpoint whatever the order and concurrency of its parts; a broken part is
 * dropped whole and sent again; a checkpoint missing a part fails after the parts timeout or on DELETE,
 * committing nothing and leaving nothing in the spool.
 */
class PartedUploadTest {
    static final Path RANKS = VECTORS.resolve("hy3-tiny-dcp/sharded");

    @TempDir
    Path dir;

    static Path rank(int part) {
        return RANKS.resolve(String.format("shard-%05d-model-00001-of-00001.safetensors", part + 1));
    }

    static HttpResponse<String> sendPart(IngestServer server, String id, int part, int parts, Path blob) throws Exception {
        return put(server, "/v1/checkpoints/" + id + "/parts/" + part + "?parts=" + parts, chunked(blob));
    }

    /** The four parts at once, each on its own thread; the answers in part order. */
    static List<HttpResponse<String>> sendAllAtOnce(IngestServer server, String id) throws Exception {
        List<CompletableFuture<HttpResponse<String>>> sent = new ArrayList<>();
        for (int part = 0; part < 4; part++) {
            int p = part;
            sent.add(CompletableFuture.supplyAsync(() -> {
                try {
                    return sendPart(server, id, p, 4, rank(p));
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            }));
        }
        List<HttpResponse<String>> answers = new ArrayList<>();
        for (CompletableFuture<HttpResponse<String>> f : sent) {
            answers.add(f.get(60, TimeUnit.SECONDS));
        }
        return answers;
    }

    private IngestOptions fromHf() throws Exception {
        return options(Direction.FROM_HF, dir.resolve("sink")).withConfigJson(Files.readAllBytes(HF_IN.resolve("config.json")));
    }

    @Test
    void fourRanksSentAtOnceCommitTheReferenceCheckpointAndOnlyTheLastPartWaitsForTheCommit() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, dir.resolve("sink")))) {
            List<HttpResponse<String>> answers = sendAllAtOnce(server, "ranks");

            answers.forEach(r -> assertThat(r.statusCode()).as(r.body()).isEqualTo(200));
            List<JsonNode> bodies = answers.stream().map(PartedUploadTest::body).toList();
            assertThat(bodies.stream().filter(b -> b.get("state").asText().equals("committed"))).hasSize(1);
            assertThat(bodies.stream().filter(b -> b.get("state").asText().equals("receiving")))
                    .hasSize(3).allSatisfy(b -> assertThat(b.get("parts").asInt()).isEqualTo(4));
            JsonNode committed = bodies.stream().filter(b -> b.get("state").asText().equals("committed")).findFirst().orElseThrow();
            assertThat(committed.get("tensors").asInt()).isEqualTo(129);
            assertThat(committed.get("parts_received").toString()).isEqualTo("[0,1,2,3]");
            assertThat(Manifests.of(dir.resolve("sink/ranks"))).isEqualTo(Manifests.of(HF_IN));
            awaitCleanup(dir.resolve("sink"));
            assertThat(spoolInUse(dir.resolve("sink"))).isEmpty();
        }
    }

    @Test
    void fromHfOfFourRanksGivesTheReferenceNativeCheckpoint() throws Exception {
        try (IngestServer server = IngestServer.start(fromHf())) {
            sendAndCommit(server, "native", HF_FROM_HF, 2, 0, 3, 1);
        }
    }

    @Test
    void statusShowsThePartsReceivedAndTheirCoverageOfADeclaredCheckpoint() throws Exception {
        try (IngestServer server = IngestServer.start(fromHf())) {
            HttpResponse<String> declared = put(server, "/v1/checkpoints/declared/manifest",
                    HttpRequest.BodyPublishers.ofString(manifest(4).toString()));
            assertThat(declared.statusCode()).as(declared.body()).isEqualTo(200);
            assertThat(json(declared).get("coverage").get("fraction").asDouble()).isZero();

            sendPart(server, "declared", 1, 4, rank(1));
            JsonNode status = json(get(server, "/v1/checkpoints/declared"));
            assertThat(status.get("state").asText()).isEqualTo("receiving");
            assertThat(status.get("parts_received").toString()).isEqualTo("[1]");
            assertThat(status.get("coverage").get("bytes").asLong()).isPositive();
            assertThat(status.get("coverage").get("fraction").asDouble()).isBetween(0.1, 0.5);

            for (int part : new int[] {0, 3, 2}) {
                HttpResponse<String> r = sendPart(server, "declared", part, 4, rank(part));
                assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            }
            JsonNode end = awaitEnd(server, "declared");
            assertThat(end.get("state").asText()).isEqualTo("committed");
            assertThat(end.get("coverage").get("fraction").asDouble()).isEqualTo(1.0);
            assertThat(Manifests.of(dir.resolve("sink/declared"))).isEqualTo(Manifests.of(HF_FROM_HF));
        }
    }

    /** Every tensor of hy3-tiny's HF checkpoint with its whole type and shape. */
    private static ObjectNode manifest(int parts) throws Exception {
        return manifest(parts, HF_IN);
    }

    /** Every tensor of {@code checkpoint} with its whole type and shape. */
    private static ObjectNode manifest(int parts, Path checkpoint) throws Exception {
        ObjectNode m = JSON.createObjectNode();
        m.put("parts", parts);
        ObjectNode tensors = m.putObject("tensors");
        for (TensorInfo t : SafetensorsSource.open(checkpoint).describe().block().tensors().orElseThrow()) {
            ObjectNode e = tensors.putObject(t.name());
            e.put("dtype", t.dtype().safetensorsName());
            Arrays.stream(t.shape()).forEach(e.putArray("shape")::add);
        }
        return m;
    }

    @Test
    void declaredPartsSentAtOnceStreamStraightIntoPlaceWithNothingSpooled() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, dir.resolve("sink")))) {
            assertThat(put(server, "/v1/checkpoints/streamed/manifest", HttpRequest.BodyPublishers.ofString(manifest(4).toString()))
                    .statusCode()).isEqualTo(200);
            sendAllAtOnce(server, "streamed").forEach(r -> assertThat(r.statusCode()).as(r.body()).isEqualTo(200));
            JsonNode end = awaitEnd(server, "streamed");
            assertThat(end.get("state").asText()).isEqualTo("committed");
            assertThat(end.get("bytes_spooled").asLong()).isZero();
            assertThat(end.get("coverage").get("fraction").asDouble()).isEqualTo(1.0);
            assertThat(Manifests.of(dir.resolve("sink/streamed"))).isEqualTo(Manifests.of(HF_IN));

            // Undeclared, the same parts wait in the spool for the last.
            sendAllAtOnce(server, "spooled").forEach(r -> assertThat(r.statusCode()).as(r.body()).isEqualTo(200));
            assertThat(awaitEnd(server, "spooled").get("bytes_spooled").asLong()).isPositive();
            awaitCleanup(dir.resolve("sink"));
            assertThat(spoolInUse(dir.resolve("sink"))).isEmpty();
        }
    }

    /** A rank with nothing to save still sends its part: one blob of no tensors. */
    @ParameterizedTest(name = "declared: {0}")
    @ValueSource(booleans = {false, true})
    void anEmptyPartCountsAsArrivedAndTheCheckpointCommits(boolean declared) throws Exception {
        byte[] json = "{\"__metadata__\":{\"DCP_SHARDING_INFO\":\"{}\",\"DCP_VERSION\":\"1.0\",\"format\":\"pt\"}}"
                .getBytes(StandardCharsets.UTF_8);
        int padded = (json.length + 7) / 8 * 8;
        java.nio.ByteBuffer blob = java.nio.ByteBuffer.allocate(8 + padded).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        blob.putLong(padded).put(json);
        while (blob.hasRemaining()) {
            blob.put((byte) ' ');
        }
        Path empty = dir.resolve("empty.safetensors");
        Files.write(empty, blob.array());
        try (IngestServer server = IngestServer.start(options(Direction.NONE, dir.resolve("sink")))) {
            if (declared) {
                put(server, "/v1/checkpoints/five/manifest", HttpRequest.BodyPublishers.ofString(manifest(5).toString()));
            }
            HttpResponse<String> nothing = sendPart(server, "five", 4, 5, empty);
            assertThat(nothing.statusCode()).as(nothing.body()).isEqualTo(200);
            assertThat(json(nothing).get("parts_received").toString()).isEqualTo("[4]");
            for (int part = 0; part < 4; part++) {
                HttpResponse<String> r = sendPart(server, "five", part, 5, rank(part));
                assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            }
            assertThat(awaitEnd(server, "five").get("state").asText()).isEqualTo("committed");
            assertThat(Manifests.of(dir.resolve("sink/five"))).isEqualTo(Manifests.of(HF_IN));
        }
    }

    @Test
    void aDeclaredPartCutOffAfterWritingGarbageIsTakenBackAndItsResendOverwritesIt() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, dir.resolve("sink")))) {
            put(server, "/v1/checkpoints/cut/manifest", HttpRequest.BodyPublishers.ofString(manifest(4).toString()));
            assertThat(sendPart(server, "cut", 0, 4, rank(0)).statusCode()).isEqualTo(200);
            // Part 1's header as it is, its data inverted, and the connection closed three quarters in.
            byte[] garbage = Files.readAllBytes(rank(1));
            long dataStart = 8 + java.nio.ByteBuffer.wrap(garbage, 0, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong();
            for (int i = (int) dataStart; i < garbage.length; i++) {
                garbage[i] = (byte) ~garbage[i];
            }
            int sent = garbage.length * 3 / 4;
            try (Socket s = startPart(server, "/v1/checkpoints/cut/parts/1?parts=4", garbage, sent)) {
                long before = Files.size(rank(0));
                awaitStatus(server, "cut", status -> status.get("bytes_received").asLong() >= before + sent);
            }
            awaitStatus(server, "cut", status -> status.get("parts_receiving").isEmpty());
            assertThat(json(get(server, "/v1/checkpoints/cut")).get("parts_received").toString()).isEqualTo("[0]");

            sendAndCommit(server, "cut", HF_IN, 1, 2, 3);
        }
    }

    @Test
    void aDeclaredPartOverlappingAnotherIsRefusedNamingTheRegionAndTheCheckpointGoesOn() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, dir.resolve("sink")))) {
            put(server, "/v1/checkpoints/twice/manifest", HttpRequest.BodyPublishers.ofString(manifest(4).toString()));
            assertThat(sendPart(server, "twice", 0, 4, rank(0)).statusCode()).isEqualTo(200);
            HttpResponse<String> again = sendPart(server, "twice", 1, 4, rank(0));
            assertThat(again.statusCode()).as(again.body()).isEqualTo(400);
            assertThat(json(again).get("error").asText()).startsWith("part 1 of checkpoint twice was dropped: tensor ")
                    .contains("arrived twice");

            sendAndCommit(server, "twice", HF_IN, 3, 1, 2);
        }
    }

    @Test
    void aDeclaredCheckpointDeletedWhileAPartStreamsLeavesNothing() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, dir.resolve("sink")))) {
            put(server, "/v1/checkpoints/dropped/manifest", HttpRequest.BodyPublishers.ofString(manifest(4).toString()));
            assertThat(sendPart(server, "dropped", 0, 4, rank(0)).statusCode()).isEqualTo(200);
            byte[] whole = Files.readAllBytes(rank(1));
            try (Socket s = startPart(server, "/v1/checkpoints/dropped/parts/1?parts=4", whole, whole.length / 2)) {
                awaitStatus(server, "dropped", status -> status.get("parts_receiving").size() == 1);
                HttpResponse<String> deleted = client(server).send(HttpRequest.newBuilder(
                        URI.create(server.baseUri() + "/v1/checkpoints/dropped")).DELETE().build(), HttpResponse.BodyHandlers.ofString());
                assertThat(deleted.statusCode()).as(deleted.body()).isEqualTo(200);
                assertThat(json(deleted).get("state").asText()).isEqualTo("aborted");
            }
            awaitCleanup(dir.resolve("sink"));
            assertThat(sinkEntries(dir.resolve("sink"))).isEmpty();
            assertThat(spoolInUse(dir.resolve("sink"))).isEmpty();
        }
    }

    @Test
    void declaredPartsOfGroupedExpertBoxesConvertToHfAsTheyStream() throws Exception {
        Path nativeIn = VECTORS.resolve("hy3-tiny-native/native");
        Map<String, TensorEvent> tensors = new java.util.LinkedHashMap<>();
        SafetensorsSource.open(nativeIn).tensors().toIterable().forEach(e -> tensors.put(e.fqn(), e));
        List<ShardedSaves.Cut> cuts = new ArrayList<>();
        tensors.forEach((name, e) -> {
            long[] s = e.wholeShape();
            if (name.endsWith("_projs")) {
                cuts.addAll(ShardedSaves.groupedBoxes(name, s));
            } else {
                cuts.add(new ShardedSaves.Cut(name, name.hashCode() & 3, Box.whole(s)));
            }
        });
        Path save = dir.resolve("grouped");
        ShardedSaves.write(save, tensors, cuts, ShardedSaves.Layout.TORCH);
        tensors.values().forEach(TensorEvent::release);
        IngestOptions toHf = options(Direction.TO_HF, dir.resolve("sink"))
                .withConfigJson(Files.readAllBytes(nativeIn.resolve("config.json")));
        try (IngestServer server = IngestServer.start(toHf)) {
            // The reference's to-hf leaves out a key its test model adds; the checkpoint's first request says so for all parts.
            assertThat(put(server, "/v1/checkpoints/hf/manifest?exclude_key_regex=%5Ecustom%5C.exclude",
                    HttpRequest.BodyPublishers.ofString(manifest(4, nativeIn).toString())).statusCode()).isEqualTo(200);
            for (int part = 0; part < 4; part++) {
                HttpResponse<String> r = sendPart(server, "hf", part, 4,
                        save.resolve(String.format("shard-%05d-model-00001-of-00001.safetensors", part + 1)));
                assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            }
            JsonNode end = awaitEnd(server, "hf");
            assertThat(end.get("state").asText()).as(end.toString()).isEqualTo("committed");
            assertThat(Manifests.of(dir.resolve("sink/hf"))).isEqualTo(Manifests.of(VECTORS.resolve("hy3-tiny-native/hf")));
        }
    }

    @Test
    void aDeclaredCheckpointMissingAnExpertIsRefusedAtItsManifestAndLeavesNothing() throws Exception {
        try (IngestServer server = IngestServer.start(fromHf())) {
            ObjectNode m = manifest(4);
            ((ObjectNode) m.get("tensors")).remove("model.layers.1.mlp.experts.3.up_proj.weight");
            HttpResponse<String> refused = put(server, "/v1/checkpoints/torn/manifest", HttpRequest.BodyPublishers.ofString(m.toString()));
            assertThat(refused.statusCode()).as(refused.body()).isEqualTo(422);
            assertThat(json(refused).get("state").asText()).isEqualTo("failed");
            assertThat(json(refused).get("error").asText()).contains("model.layers.1.mlp.experts.3.up_proj.weight");
            awaitCleanup(dir.resolve("sink"));
            assertThat(sinkEntries(dir.resolve("sink"))).isEmpty();
            assertThat(spoolInUse(dir.resolve("sink"))).isEmpty();
        }
    }

    @Test
    void aPartWhoseBodyIsTruncatedIsDroppedWholeAndCanBeSentAgain() throws Exception {
        Path truncated = dir.resolve("truncated.safetensors");
        byte[] whole = Files.readAllBytes(rank(2));
        Files.write(truncated, Arrays.copyOf(whole, whole.length - 100));
        try (IngestServer server = IngestServer.start(options(Direction.NONE, dir.resolve("sink")))) {
            sendPart(server, "torn", 0, 4, rank(0));
            HttpResponse<String> broken = sendPart(server, "torn", 2, 4, truncated);
            assertThat(broken.statusCode()).isEqualTo(400);
            assertThat(json(broken).get("error").asText()).contains("part 2 of checkpoint torn was dropped")
                    .contains("truncated");
            assertThat(json(get(server, "/v1/checkpoints/torn")).get("parts_received").toString()).isEqualTo("[0]");

            sendAndCommit(server, "torn", HF_IN, 2, 1, 3);
        }
    }

    @Test
    void aPartWhoseClientDisconnectsMidBodyIsDroppedAndCanBeSentAgain() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, dir.resolve("sink")))) {
            byte[] whole = Files.readAllBytes(rank(1));
            try (Socket s = startPart(server, "/v1/checkpoints/cut/parts/1?parts=4", whole, whole.length / 2)) {
                awaitStatus(server, "cut", status -> status.get("bytes_received").asLong() >= whole.length / 2);
            }
            awaitStatus(server, "cut", status -> status.get("parts_receiving").isEmpty());
            assertThat(json(get(server, "/v1/checkpoints/cut")).get("parts_received")).isEmpty();

            sendAndCommit(server, "cut", HF_IN, 0, 1, 2, 3);
        }
    }

    @Test
    void aPartSentAgainAfterItArrivedIsAConflictNamingThePartEvenOnceCommitted() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, dir.resolve("sink")))) {
            assertThat(sendPart(server, "again", 3, 4, rank(3)).statusCode()).isEqualTo(200);
            HttpResponse<String> again = sendPart(server, "again", 3, 4, rank(3));
            assertThat(again.statusCode()).isEqualTo(409);
            assertThat(json(again).get("error").asText()).isEqualTo("part 3 of checkpoint again has arrived already");
            for (int part = 0; part < 3; part++) {
                assertThat(sendPart(server, "again", part, 4, rank(part)).statusCode()).isEqualTo(200);
            }
            // The client of the part that completed the set lost its answer: sent again, the part is still "arrived".
            HttpResponse<String> afterCommit = sendPart(server, "again", 2, 4, rank(2));
            assertThat(afterCommit.statusCode()).isEqualTo(409);
            assertThat(json(afterCommit).get("error").asText()).isEqualTo("part 2 of checkpoint again has arrived already");
            assertThat(json(get(server, "/v1/checkpoints/again")).get("state").asText()).isEqualTo("committed");
        }
    }

    @Test
    void partsThatDisagreeOnTheirCountOrNumberAreBadRequests() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, dir.resolve("sink")))) {
            assertThat(sendPart(server, "count", 0, 4, rank(0)).statusCode()).isEqualTo(200);
            HttpResponse<String> other = sendPart(server, "count", 1, 3, rank(1));
            assertThat(other.statusCode()).isEqualTo(400);
            assertThat(json(other).get("error").asText()).contains("has 4 parts").contains("parts=3");
            HttpResponse<String> outside = sendPart(server, "count", 4, 4, rank(1));
            assertThat(outside.statusCode()).isEqualTo(400);
            assertThat(json(outside).get("error").asText()).contains("part 4 is outside 0..3");
            HttpResponse<String> none = put(server, "/v1/checkpoints/count/parts/1", chunked(rank(1)));
            assertThat(none.statusCode()).isEqualTo(400);
            assertThat(json(none).get("error").asText()).contains("?parts=N");
        }
    }

    @Test
    void partsThatOverlapFailTheCheckpointNamingTheTensorAndBothPartsAndCommitNothing() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, dir.resolve("sink")))) {
            assertThat(sendPart(server, "twice", 0, 2, rank(0)).statusCode()).isEqualTo(200);
            HttpResponse<String> last = sendPart(server, "twice", 1, 2, rank(0));
            assertThat(last.statusCode()).isEqualTo(400);
            assertThat(json(last).get("state").asText()).isEqualTo("failed");
            assertThat(json(last).get("error").asText()).contains("is saved twice, in ").contains("part-00000-blob-00001")
                    .contains("part-00001-blob-00001");
            awaitCleanup(dir.resolve("sink"));
            assertThat(sinkEntries(dir.resolve("sink"))).isEmpty();
            assertThat(spoolInUse(dir.resolve("sink"))).isEmpty();
        }
    }

    @Test
    void aDeclaredCheckpointRefusesAPartWithATensorItDoesNotDeclareAndTakesItAgainFixed() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, dir.resolve("sink")))) {
            ObjectNode m = manifest(4);
            ((ObjectNode) m.get("tensors")).remove("model.norm.weight");
            assertThat(put(server, "/v1/checkpoints/strict/manifest", HttpRequest.BodyPublishers.ofString(m.toString()))
                    .statusCode()).isEqualTo(200);
            List<Integer> refused = new ArrayList<>();
            for (int part = 0; part < 4; part++) {
                HttpResponse<String> r = sendPart(server, "strict", part, 4, rank(part));
                if (r.statusCode() == 400) {
                    assertThat(json(r).get("error").asText()).contains("tensor model.norm.weight is not in the declared checkpoint");
                    refused.add(part);
                }
            }
            assertThat(refused).hasSize(1);
            assertThat(json(get(server, "/v1/checkpoints/strict")).get("state").asText()).isEqualTo("receiving");
            HttpResponse<String> deleted = client(server).send(HttpRequest.newBuilder(
                    URI.create(server.baseUri() + "/v1/checkpoints/strict")).DELETE().build(), HttpResponse.BodyHandlers.ofString());
            assertThat(deleted.statusCode()).as(deleted.body()).isEqualTo(200);
        }
    }

    @ParameterizedTest(name = "declared: {0}")
    @ValueSource(booleans = {false, true})
    void aMissingPartFailsTheCheckpointAfterThePartsTimeoutAndALatePartIsGone(boolean declared) throws Exception {
        IngestOptions options = options(Direction.NONE, dir.resolve("sink")).withPartsTimeout(Duration.ofMillis(800));
        try (IngestServer server = IngestServer.start(options)) {
            if (declared) {
                put(server, "/v1/checkpoints/late/manifest", HttpRequest.BodyPublishers.ofString(manifest(4).toString()));
            }
            for (int part : new int[] {0, 1, 3}) {
                assertThat(sendPart(server, "late", part, 4, rank(part)).statusCode()).isEqualTo(200);
            }
            JsonNode end = awaitEnd(server, "late");
            assertThat(end.get("state").asText()).isEqualTo("failed");
            assertThat(end.get("error").asText()).isEqualTo("part 2 of 4 did not arrive: no part was received for 800 ms"
                    + " (--parts-timeout); nothing was committed");
            awaitCleanup(dir.resolve("sink"));
            assertThat(sinkEntries(dir.resolve("sink"))).isEmpty();
            assertThat(spoolInUse(dir.resolve("sink"))).isEmpty();
        }
    }

    @Test
    void deleteEndsACheckpointBeingUploadedInPartsAndTheIdStartsAfresh() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, dir.resolve("sink")))) {
            sendPart(server, "gone", 0, 4, rank(0));
            sendPart(server, "gone", 1, 4, rank(1));
            HttpResponse<String> deleted = client(server).send(HttpRequest.newBuilder(
                    URI.create(server.baseUri() + "/v1/checkpoints/gone")).DELETE().build(), HttpResponse.BodyHandlers.ofString());
            assertThat(deleted.statusCode()).as(deleted.body()).isEqualTo(200);
            assertThat(json(deleted).get("state").asText()).isEqualTo("aborted");
            assertThat(json(deleted).get("error").asText()).contains("deleted by DELETE").contains("2 of 4 parts arrived");
            assertThat(spoolInUse(dir.resolve("sink"))).isEmpty();

            List<HttpResponse<String>> again = sendAllAtOnce(server, "gone");
            again.forEach(r -> assertThat(r.statusCode()).as(r.body()).isEqualTo(200));
            assertThat(Manifests.of(dir.resolve("sink/gone"))).isEqualTo(Manifests.of(HF_IN));
            HttpResponse<String> committed = client(server).send(HttpRequest.newBuilder(
                    URI.create(server.baseUri() + "/v1/checkpoints/gone")).DELETE().build(), HttpResponse.BodyHandlers.ofString());
            assertThat(committed.statusCode()).isEqualTo(409);
        }
    }

    @ParameterizedTest(name = "declared: {0}")
    @ValueSource(booleans = {false, true})
    void twoCheckpointsInFlightAtOnceEachCommitTheirOwnParts(boolean declared) throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.NONE, dir.resolve("sink")))) {
            if (declared) {
                for (String id : List.of("a", "b")) {
                    put(server, "/v1/checkpoints/" + id + "/manifest", HttpRequest.BodyPublishers.ofString(manifest(4).toString()));
                }
            }
            CompletableFuture<List<HttpResponse<String>>> a = CompletableFuture.supplyAsync(() -> sendQuietly(server, "a"));
            CompletableFuture<List<HttpResponse<String>>> b = CompletableFuture.supplyAsync(() -> sendQuietly(server, "b"));
            a.get(60, TimeUnit.SECONDS).forEach(r -> assertThat(r.statusCode()).as(r.body()).isEqualTo(200));
            b.get(60, TimeUnit.SECONDS).forEach(r -> assertThat(r.statusCode()).as(r.body()).isEqualTo(200));
            assertThat(Manifests.of(dir.resolve("sink/a"))).isEqualTo(Manifests.of(HF_IN));
            assertThat(Manifests.of(dir.resolve("sink/b"))).isEqualTo(Manifests.of(HF_IN));
        }
    }

    @Test
    void fastPartsWaitInTheSpoolForASlowSinkAndAnswerBeforeItCommits() throws Exception {
        // A sink that takes 20 ms per tensor: 129 tensors take over 2.5 s to write.
        CheckpointSinks slow = (id, progress) -> {
            CheckpointSink folder = TestServers.folders(dir.resolve("sink")).open(id, progress);
            return new CheckpointSink() {
                @Override
                public reactor.core.publisher.Mono<io.moeflux.pipeline.CommitSummary> write(
                        io.moeflux.pipeline.CheckpointDescriptor planned, reactor.core.publisher.Flux<TensorEvent> events) {
                    return folder.write(planned, events.delayElements(Duration.ofMillis(20)));
                }

                @Override
                public boolean placesPieces() {
                    return true;
                }
            };
        };
        IngestOptions options = IngestOptions.defaults(0, Direction.NONE, slow, dir.resolve("sink/.moeflux-spool"));
        try (IngestServer server = IngestServer.start(options)) {
            put(server, "/v1/checkpoints/slow/manifest", HttpRequest.BodyPublishers.ofString(manifest(4).toString()));
            long start = System.nanoTime();
            for (int part = 0; part < 3; part++) {
                assertThat(sendPart(server, "slow", part, 4, rank(part)).statusCode()).isEqualTo(200);
            }
            assertThat(Duration.ofNanos(System.nanoTime() - start)).as("three parts answered while the sink writes")
                    .isLessThan(Duration.ofMillis(2000));
            HttpResponse<String> last = sendPart(server, "slow", 3, 4, rank(3));
            assertThat(last.statusCode()).as(last.body()).isEqualTo(200);
            assertThat(json(last).get("state").asText()).isEqualTo("committed");
            assertThat(Manifests.of(dir.resolve("sink/slow"))).isEqualTo(Manifests.of(HF_IN));
        }
    }

    /** Sends {@code parts} of the reference save one after the other, each taken (200); the checkpoint then commits {@code expected}. */
    private void sendAndCommit(IngestServer server, String id, Path expected, int... parts) throws Exception {
        for (int part : parts) {
            HttpResponse<String> r = sendPart(server, id, part, 4, rank(part));
            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
        }
        assertThat(awaitEnd(server, id).get("state").asText()).isEqualTo("committed");
        assertThat(Manifests.of(dir.resolve("sink/" + id))).isEqualTo(Manifests.of(expected));
    }

    /** Opens a connection that starts {@code PUT path} of {@code body} and sends its first {@code sent} bytes; the caller closes it. */
    private static Socket startPart(IngestServer server, String path, byte[] body, int sent) throws Exception {
        Socket s = new Socket("127.0.0.1", server.port());
        OutputStream out = s.getOutputStream();
        out.write(("PUT " + path + " HTTP/1.1\r\nHost: x\r\nContent-Length: " + body.length + "\r\n\r\n")
                .getBytes(StandardCharsets.US_ASCII));
        out.write(body, 0, sent);
        out.flush();
        return s;
    }

    private static List<HttpResponse<String>> sendQuietly(IngestServer server, String id) {
        try {
            return sendAllAtOnce(server, id);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    private static JsonNode body(HttpResponse<String> r) {
        try {
            return json(r);
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    private static void awaitStatus(IngestServer server, String id, java.util.function.Predicate<JsonNode> until) throws Exception {
        long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
        while (true) {
            HttpResponse<String> r = get(server, "/v1/checkpoints/" + id);
            if (r.statusCode() == 200 && until.test(json(r))) {
                return;
            }
            assertThat(System.nanoTime()).as("status of %s: %s", id, r.body()).isLessThan(deadline);
            Thread.sleep(20);
        }
    }
}
