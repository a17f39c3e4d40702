package io.moeflux.serve;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.connect.safetensors.Manifests;
import io.moeflux.connect.safetensors.Placement;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.TensorInfo;
import io.moeflux.testing.TensorBytes;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.Function;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import reactor.core.publisher.Flux;
import reactor.test.StepVerifier;

/** The body decoder on its own: chunking, ownership of buffers and tensors, spool files. */
class BlobSpoolTest {
    static final Path FILE = ReferenceUploadTest.NATIVE_IN;

    @TempDir
    Path spool;
    @TempDir
    Path output;

    private final UploadStatus status = new UploadStatus("test", new IngestMetrics());

    private BlobSpool.Settings settings(boolean singleBlob) {
        return new BlobSpool.Settings(spool, 1 << 20, singleBlob, 64L << 20, Runnable::run, new HeaderBudget(2 << 20));
    }

    private Flux<TensorEvent> decode(Flux<ByteBuf> body) {
        return BlobSpool.decode(body, settings(false), tensors -> BlobSpool.Placements.NONE, status);
    }

    /** {@code body} cut into {@code size}-byte buffers. */
    private static List<ByteBuf> chunks(byte[] body, int size) {
        List<ByteBuf> out = new ArrayList<>();
        for (int i = 0; i < body.length; i += size) {
            out.add(Unpooled.copiedBuffer(body, i, Math.min(size, body.length - i)));
        }
        return out;
    }

    private static byte[] twoBlobs() throws IOException {
        byte[] file = Files.readAllBytes(FILE);
        byte[] body = new byte[2 * file.length];
        System.arraycopy(file, 0, body, 0, file.length);
        System.arraycopy(file, 0, body, file.length, file.length);
        return body;
    }

    private List<String> spoolInUse() throws IOException {
        return TestServers.spoolInUseIn(spool);
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 7, 4096, 1 << 20})
    void everyTensorOfEveryBlobComesOutWithItsBytesHoweverTheBodyIsCut(int chunkSize) throws Exception {
        List<ByteBuf> body = chunks(twoBlobs(), chunkSize);
        Map<String, String> expected = Manifests.of(FILE);

        List<TensorEvent> events = decode(Flux.fromIterable(body)).collectList().block();

        assertThat(events).hasSize(2 * expected.size());
        Map<String, String> first = new TreeMap<>();
        Map<String, String> second = new TreeMap<>();
        for (int i = 0; i < events.size(); i++) {
            (i < expected.size() ? first : second).put(events.get(i).fqn(), Manifests.describe(events.get(i)));
        }
        assertThat(first).isEqualTo(expected);
        assertThat(second).isEqualTo(expected);
        assertThat(body).allSatisfy(b -> assertThat(b.refCnt()).isZero());
        assertThat(status.toJson().get("bytes_received")).isEqualTo(2 * Files.size(FILE));
        events.forEach(TensorEvent::release);
        assertThat(spoolInUse()).isEmpty();
    }

    @Test
    void aSpoolFileIsNeverVisibleAndStaysMappedAndOpenUntilTheLastTensorFromItIsReleased() throws Exception {
        List<TensorEvent> events = decode(Flux.fromIterable(chunks(Files.readAllBytes(FILE), 4096))).collectList().block();

        try (Stream<Path> files = Files.list(spool)) {
            assertThat(files).isEmpty();
        }
        assertThat(spoolInUse()).allSatisfy(use -> assertThat(use).endsWith("(deleted)"))
                .anySatisfy(use -> assertThat(use).startsWith("mapped: "))
                .anySatisfy(use -> assertThat(use).startsWith("open: "));
        assertThat(events).allSatisfy(e -> assertThat(e.tensor().fileRegion()).isPresent());
        events.subList(1, events.size()).forEach(TensorEvent::release);
        assertThat(spoolInUse()).isNotEmpty();
        events.getFirst().release();
        assertThat(spoolInUse()).isEmpty();
    }

    @Test
    void aBodyErrorMidBlobFailsReleasesEveryBufferAndDeletesTheSpool() throws Exception {
        byte[] file = Files.readAllBytes(FILE);
        List<ByteBuf> body = chunks(file, 4096);
        List<ByteBuf> half = body.subList(0, body.size() / 2);
        List<TensorEvent> received = new ArrayList<>();

        StepVerifier.create(decode(Flux.fromIterable(half).concatWith(Flux.error(new IOException("connection reset")))))
                .recordWith(() -> received)
                .thenConsumeWhile(e -> true)
                .expectErrorMessage("connection reset")
                .verify();

        received.forEach(TensorEvent::release);
        assertThat(half).allSatisfy(b -> assertThat(b.refCnt()).isZero());
        assertThat(spoolInUse()).isEmpty();
        body.subList(body.size() / 2, body.size()).forEach(ByteBuf::release);
    }

    @Test
    void cancellingMidBlobReleasesQueuedBuffersAndUndeliveredTensorsAndDeletesTheSpool() throws Exception {
        List<ByteBuf> body = chunks(Files.readAllBytes(FILE), 4096);
        List<TensorEvent> received = new ArrayList<>();

        StepVerifier.create(decode(Flux.fromIterable(body)), 1)
                .recordWith(() -> received)
                .expectNextCount(1)
                .thenCancel()
                .verify();

        assertThat(received).hasSize(1);
        received.forEach(TensorEvent::release);
        assertThat(body).allSatisfy(b -> assertThat(b.refCnt()).isZero());
        assertThat(spoolInUse()).isEmpty();
    }

    @Test
    void aMalformedHeaderFailsNamingTheBlobAndItsBodyOffset() throws Exception {
        byte[] file = Files.readAllBytes(FILE);
        byte[] body = twoBlobs();
        body[file.length + 8] = '[';
        List<ByteBuf> buffers = chunks(body, 4096);
        List<TensorEvent> received = new ArrayList<>();

        StepVerifier.create(decode(Flux.fromIterable(buffers)))
                .recordWith(() -> received)
                .thenConsumeWhile(e -> true)
                .expectErrorSatisfies(e -> assertThat(e).isInstanceOf(InvalidCheckpointException.class)
                        .hasMessageStartingWith("blob 2 (at body byte " + file.length + "): header"))
                .verify();

        received.forEach(TensorEvent::release);
        assertThat(buffers).allSatisfy(b -> assertThat(b.refCnt()).isZero());
        assertThat(spoolInUse()).isEmpty();
    }
    @ParameterizedTest
    @ValueSource(ints = {7, 4096})
    void placedTensorsGoStraightToTheirPlaceAndComeOutAsThatRegionTheRestAsBefore(int chunkSize) throws Exception {
        byte[] file = Files.readAllBytes(FILE);
        Map<String, String> expected = Manifests.of(FILE);
        Path target = output.resolve("target");
        Map<String, Long> offsets = new TreeMap<>();
        try (FileChannel out = FileChannel.open(target, StandardOpenOption.CREATE_NEW, StandardOpenOption.READ,
                StandardOpenOption.WRITE)) {
            ReentrantLock lock = new ReentrantLock();
            // Every other tensor is placed, each at a gap of 3 bytes after the previous one.
            Function<List<TensorInfo>, BlobSpool.Placements> placeEveryOther = infos -> {
                Map<String, Placement> placements = new TreeMap<>();
                long at = 3;
                for (int i = 0; i < infos.size(); i += 2) {
                    offsets.put(infos.get(i).name(), at);
                    placements.put(infos.get(i).name(), new Placement(out, at, infos.get(i).byteSize(), lock));
                    at += infos.get(i).byteSize() + 3;
                }
                return name -> Optional.ofNullable(placements.get(name));
            };

            List<TensorEvent> events = BlobSpool.decode(Flux.fromIterable(chunks(file, chunkSize)), settings(true), placeEveryOther, status).collectList().block();

            Map<String, String> described = new TreeMap<>();
            for (TensorEvent e : events) {
                described.put(e.fqn(), Manifests.describe(e));
                var region = e.tensor().fileRegion().orElseThrow();
                if (offsets.containsKey(e.fqn())) {
                    assertThat(region.channel()).isSameAs(out);
                    assertThat(region.position()).isEqualTo(offsets.get(e.fqn()));
                    byte[] onFile = new byte[(int) e.tensor().byteSize()];
                    out.read(ByteBuffer.wrap(onFile), region.position());
                    assertThat(onFile).isEqualTo(TensorBytes.of(e.tensor()));
                } else {
                    assertThat(region.channel()).isNotSameAs(out);
                }
            }
            assertThat(offsets).isNotEmpty().hasSizeLessThan(events.size());
            assertThat(described).isEqualTo(expected);
            events.forEach(TensorEvent::release);
        }
        assertThat(spoolInUse()).isEmpty();
    }
}
