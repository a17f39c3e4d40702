package io.moeflux.serve;

import static io.moeflux.serve.TestServers.json;
import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.connect.safetensors.SafetensorsFormat;
import io.moeflux.connect.safetensors.SafetensorsSource;
import io.moeflux.pipeline.CheckpointSink;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.TensorInfo;
import io.moeflux.testing.TensorBytes;
import io.netty.buffer.ByteBufAllocator;
import io.netty.buffer.ByteBufAllocatorMetricProvider;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import reactor.adapter.JdkFlowAdapter;
import reactor.core.publisher.Flux;

/** A fast client and a slow sink: the server reads the socket only as fast as the sink writes. */
class BackpressureTest {
    static final int TENSORS_PER_BLOB = 32;
    static final int BLOBS = 2;
    static final long TENSOR_BYTES = 4L << 20;
    static final long UPLOAD_BYTES = BLOBS * TENSORS_PER_BLOB * TENSOR_BYTES;
    static final int CHUNK = 64 << 10;

    @TempDir
    Path sinkDir;

    @Test
    void aSlowSinkThrottlesAFastClientAndMemoryStaysFarBelowTheUploadSize() throws Exception {
        CheckpointSinks slow = (id, progress) -> {
            CheckpointSink folder = TestServers.folders(sinkDir).open(id, progress);
            return (planned, events) -> folder.write(planned, events.delayElements(Duration.ofMillis(25)));
        };
        IngestOptions options = IngestOptions.defaults(0, Direction.NONE, slow, sinkDir.resolve(".moeflux-spool"));
        try (IngestServer server = IngestServer.start(options)) {
            long rssBefore = rssAnonBytes();
            HttpRequest request = HttpRequest.newBuilder(URI.create(server.baseUri() + "/v1/checkpoints/big"))
                    .PUT(HttpRequest.BodyPublishers.fromPublisher(JdkFlowAdapter.publisherToFlowPublisher(body())))
                    .build();
            CompletableFuture<HttpResponse<String>> response =
                    TestServers.client(server).sendAsync(request, HttpResponse.BodyHandlers.ofString());

            AtomicLong maxLag = new AtomicLong();
            long maxDirect = 0;
            long maxRss = 0;
            while (!response.isDone()) {
                HttpResponse<String> s = TestServers.get(server, "/v1/checkpoints/big");
                if (s.statusCode() == 200) {
                    long lag = json(s).get("bytes_received").asLong() - json(s).get("bytes_written").asLong();
                    maxLag.accumulateAndGet(lag, Math::max);
                }
                maxDirect = Math.max(maxDirect, nettyDirectBytes());
                maxRss = Math.max(maxRss, rssAnonBytes());
                Thread.sleep(10);
            }
            HttpResponse<String> r = response.get(60, TimeUnit.SECONDS);
            System.out.printf("upload %d MiB: max received-but-unwritten %d MiB, max Netty direct memory %d MiB, "
                            + "RssAnon %d MiB before, %d MiB at most during the upload%n",
                    UPLOAD_BYTES >> 20, maxLag.get() >> 20, maxDirect >> 20, rssBefore >> 20, maxRss >> 20);

            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            assertThat(json(r).get("bytes").asLong()).isEqualTo(UPLOAD_BYTES);
            assertThat(json(r).get("tensors").asLong()).isEqualTo(BLOBS * TENSORS_PER_BLOB);
            assertThat(maxLag.get()).as("bytes taken from the socket but not yet written").isLessThan(UPLOAD_BYTES / 8);
            assertThat(maxDirect).as("Netty buffers").isLessThan(UPLOAD_BYTES / 8);
            assertThat(maxRss - rssBefore).as("anonymous memory growth").isLessThan(UPLOAD_BYTES / 3);
            assertTensorBytes(sinkDir.resolve("big"), "blob1.t7");
        }
    }

    /** Blobs of U8 tensors whose bytes are {@code (tensor index + position) mod 251}, made as the client sends them. */
    static Flux<ByteBuffer> body() {
        return Flux.range(0, BLOBS).concatMap(b -> {
            List<TensorInfo> infos = new ArrayList<>();
            for (int t = 0; t < TENSORS_PER_BLOB; t++) {
                infos.add(new TensorInfo("blob" + b + ".t" + t, DType.U8, new long[] {TENSOR_BYTES}));
            }
            List<TensorInfo> ordered = SafetensorsFormat.fileOrder(infos);
            Flux<ByteBuffer> data = Flux.fromIterable(ordered).concatMap(info -> Flux.range(0, (int) (TENSOR_BYTES / CHUNK))
                    .map(c -> pattern(tensorIndex(info.name()), (long) c * CHUNK)), 1);
            return Flux.just(ByteBuffer.wrap(SafetensorsFormat.encodeHeader(ordered))).concatWith(data);
        }, 1);
    }

    static int tensorIndex(String name) {
        return Integer.parseInt(name.substring(name.indexOf(".t") + 2));
    }

    /** The 251 distinct chunks, made once: a client that allocated per chunk would blur the memory measurement. */
    private static final ByteBuffer[] PATTERNS = new ByteBuffer[251];

    static {
        for (int start = 0; start < PATTERNS.length; start++) {
            byte[] b = new byte[CHUNK];
            for (int i = 0; i < CHUNK; i++) {
                b[i] = (byte) ((start + i) % 251);
            }
            PATTERNS[start] = ByteBuffer.wrap(b).asReadOnlyBuffer();
        }
    }

    static ByteBuffer pattern(int tensor, long offset) {
        return PATTERNS[(int) ((tensor + offset) % 251)].duplicate();
    }

    private static void assertTensorBytes(Path checkpoint, String name) throws IOException {
        for (TensorEvent e : SafetensorsSource.open(checkpoint).tensors().filter(e -> {
            if (e.fqn().equals(name)) {
                return true;
            }
            e.release();
            return false;
        }).collectList().block()) {
            byte[] bytes = TensorBytes.of(e.tensor());
            e.release();
            for (int c = 0; c < TENSOR_BYTES / CHUNK; c++) {
                assertThat(ByteBuffer.wrap(bytes, c * CHUNK, CHUNK)).isEqualTo(pattern(tensorIndex(name), (long) c * CHUNK));
            }
        }
    }

    private static long nettyDirectBytes() {
        return ((ByteBufAllocatorMetricProvider) ByteBufAllocator.DEFAULT).metric().usedDirectMemory();
    }

    /** Anonymous resident memory of this JVM (heap, direct buffers, malloc); mapped file pages are not in it. */
    static long rssAnonBytes() throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("RssAnon:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", "")) << 10;
            }
        }
        throw new IllegalStateException("no RssAnon in /proc/self/status");
    }
}
