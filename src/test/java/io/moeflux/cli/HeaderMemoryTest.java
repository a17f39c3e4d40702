package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Headers within the size limits but listing hundreds of thousands of (empty) tensors, read under the
 * launcher's heap limit: every one is answered, converted or refused, and nothing runs out of memory.
 */
class HeaderMemoryTest {
    @TempDir
    Path dir;

    /** A safetensors blob of {@code count} empty U8 tensors: about 55 header bytes each, no data. */
    static byte[] emptyTensors(int count) {
        StringBuilder json = new StringBuilder(count * 56).append('{');
        for (int i = 0; i < count; i++) {
            if (i > 0) {
                json.append(',');
            }
            json.append("\"t").append(i).append("\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}");
        }
        json.append('}');
        while (json.length() % 8 != 0) {
            json.append(' ');
        }
        byte[] header = json.toString().getBytes(StandardCharsets.US_ASCII);
        return ByteBuffer.allocate(8 + header.length).order(ByteOrder.LITTLE_ENDIAN).putLong(header.length).put(header).array();
    }

    private Process run(Path log, Object... args) throws Exception {
        Process p = ChildMoeflux.start(log, args);
        assertThat(p.waitFor(120, TimeUnit.SECONDS)).isTrue();
        return p;
    }

    @Test
    void fourConcurrentUploadsOfSixteenMegabyteHeadersAreEachAnsweredWithoutRunningOutOfMemory() throws Exception {
        byte[] body = emptyTensors(280_000);
        assertThat(body.length).isLessThan(16 << 20);
        Path log = dir.resolve("serve.log");
        Process serve = ChildMoeflux.start(log, "serve", "--port", "0", "--sink", dir.resolve("sink"), "--direction", "none");
        try {
            URI base = ChildMoeflux.awaitListening(serve, log);
            HttpClient client = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
            List<CompletableFuture<HttpResponse<String>>> uploads = new ArrayList<>();
            for (int i = 0; i < 4; i++) {
                uploads.add(client.sendAsync(HttpRequest.newBuilder(base.resolve("/v1/checkpoints/many-" + i))
                        .PUT(HttpRequest.BodyPublishers.ofByteArray(body)).build(), HttpResponse.BodyHandlers.ofString()));
            }
            List<Integer> codes = new ArrayList<>();
            for (var u : uploads) {
                HttpResponse<String> r = u.get(180, TimeUnit.SECONDS);
                codes.add(r.statusCode());
                if (r.statusCode() == 503) {
                    assertThat(r.headers().firstValue("Retry-After")).isPresent();
                    assertThat(r.body()).contains("send it again shortly");
                }
            }
            assertThat(codes).as(Files.readString(log)).allMatch(Set.of(200, 503)::contains).contains(200);
            assertThat(client.send(HttpRequest.newBuilder(base.resolve("/healthz")).build(),
                    HttpResponse.BodyHandlers.ofString()).statusCode()).isEqualTo(200);
            assertThat(Files.readString(log)).doesNotContain("OutOfMemoryError");
        } finally {
            serve.destroy();
            serve.waitFor(30, TimeUnit.SECONDS);
        }
    }

    @Test
    void aHeaderListingMoreTensorsThanOneHeaderMayIsRefusedNotRunOutOfMemoryOn() throws Exception {
        Path file = dir.resolve("too-many.safetensors");
        Files.write(file, emptyTensors(500_001));
        Path log = dir.resolve("inspect.log");

        Process inspect = run(log, "inspect", file, "--totals");

        assertThat(inspect.exitValue()).as(Files.readString(log)).isEqualTo(ExitCodes.BAD_INPUT);
        assertThat(Files.readString(log).lines()).singleElement().asString().contains("more than 500,000 tensors");
    }

    @Test
    void aHeaderOfAsManyTensorsAsOneMayListIsReadAndCopiedUnderTheLaunchersHeap() throws Exception {
        Path file = dir.resolve("many.safetensors");
        Files.write(file, emptyTensors(500_000));
        Path log = dir.resolve("copy.log");

        Process copy = run(log, "copy", file, dir.resolve("copy"), "--no-sync");

        assertThat(copy.exitValue()).as(Files.readString(log)).isZero();
        assertThat(Files.readString(log)).doesNotContain("OutOfMemoryError");
    }
}
