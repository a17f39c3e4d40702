package io.moeflux.serve;

import static io.moeflux.serve.TestServers.json;
import static io.moeflux.serve.TestServers.options;
import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.net.http.HttpRequest.BodyPublishers;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A sink on a file system too small for the upload, a 4 MiB tmpfs mounted for the test (it needs
 * root, as CI has): every way of running out of space is 507, whether the upload was planned from its
 * header or spooled, and nothing is left behind.
 */
class DiskFullTest {
    @TempDir
    Path tmp;

    private Path small;

    private static int run(String... command) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD).start();
        return p.waitFor(30, TimeUnit.SECONDS) ? p.exitValue() : -1;
    }

    @BeforeEach
    void mountASmallFileSystem() throws Exception {
        small = Files.createDirectories(tmp.resolve("small"));
        assumeTrue(run("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", small.toString()) == 0,
                "mounting a tmpfs needs root");
    }

    @AfterEach
    void unmount() throws Exception {
        if (small != null) {
            run("umount", small.toString());
        }
    }

    /** One U8 tensor of {@code bytes} bytes: more than the file system holds. */
    private static byte[] oneTensor(int bytes) {
        byte[] header = ("{\"big\":{\"dtype\":\"U8\",\"shape\":[" + bytes + "],\"data_offsets\":[0," + bytes + "]}}  ")
                .getBytes(StandardCharsets.US_ASCII);
        byte[] padded = new byte[(header.length + 7) / 8 * 8];
        java.util.Arrays.fill(padded, (byte) ' ');
        System.arraycopy(header, 0, padded, 0, header.length);
        return ByteBuffer.allocate(8 + padded.length + bytes).order(ByteOrder.LITTLE_ENDIAN)
                .putLong(padded.length).put(padded).array();
    }

    @Test
    void runningOutOfSpaceIs507WhetherTheUploadWasPlannedOrSpooled() throws Exception {
        Path sink = Files.createDirectories(small.resolve("sink"));
        byte[] body = oneTensor(8 << 20);
        try (IngestServer server = IngestServer.start(options(Direction.NONE, sink))) {
            HttpResponse<String> spooled = TestServers.put(server, "/v1/checkpoints/spooled", BodyPublishers.ofByteArray(body));
            HttpResponse<String> planned = TestServers.put(server, "/v1/checkpoints/planned?single_blob=true",
                    BodyPublishers.ofByteArray(body));

            assertThat(spooled.statusCode()).as(spooled.body()).isEqualTo(507);
            assertThat(json(spooled).get("state").asText()).isEqualTo("failed");
            assertThat(planned.statusCode()).as(planned.body()).isEqualTo(507);
            TestServers.awaitCleanup(sink);
            assertThat(TestServers.sinkEntries(sink)).isEmpty();
        }
    }
}
