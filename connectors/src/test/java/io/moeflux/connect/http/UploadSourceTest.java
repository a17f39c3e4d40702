package io.moeflux.connect.http;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.connect.safetensors.Manifests;
import io.moeflux.connect.safetensors.SafetensorsFormat;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.TensorInfo;
import io.moeflux.testing.TensorBytes;
import io.netty.buffer.ByteBuf;
import io.netty.buffer.Unpooled;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import reactor.core.publisher.Flux;
import reactor.test.StepVerifier;
import reactor.test.publisher.TestPublisher;

/** The upload source on its own: chunking, ownership of buffers and tensors, spool files, streaming, row pieces. */
class UploadSourceTest {
    static final Path FILE = Path.of("../pipeline/src/test/resources/reference-vectors/hy3-tiny-native/native/model.safetensors");

    @TempDir
    Path spool;

    private final AtomicLong bytesReceived = new AtomicLong();

    private UploadSourceOptions options(boolean singleBlob) {
        return new UploadSourceOptions(spool, 1 << 20, singleBlob, UploadSourceOptions.HeaderAllowance.UNLIMITED,
                new UploadSourceOptions.Listener() {
                    @Override
                    public void bytesReceived(long n) {
                        bytesReceived.addAndGet(n);
                    }
                }, 64L << 20);
    }

    private Flux<TensorEvent> decode(Flux<ByteBuf> body) {
        return UploadSource.create(body, options(false)).tensors();
    }

    /** {@code body} cut into {@code size}-byte buffers. */
    static List<ByteBuf> chunks(byte[] body, int size) {
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
        return SpoolFiles.inUse(spool);
    }

    @ParameterizedTest
    @ValueSource(ints = {1, 7, 4096, 1 << 20})
    void everyTensorOfEveryBlobComesOutWithItsBytesHoweverTheBodyIsCut(int chunkSize) throws Exception {
        List<ByteBuf> body = chunks(twoBlobs(), chunkSize);
        Map<String, String> expected = Manifests.of(FILE);

        List<TensorEvent> events = decode(Flux.fromIterable(body)).collectList().block();

        assertThat(events).hasSize(2 * expected.size()).allMatch(TensorEvent::isWhole);
        Map<String, String> first = new TreeMap<>();
        Map<String, String> second = new TreeMap<>();
        for (int i = 0; i < events.size(); i++) {
            (i < expected.size() ? first : second).put(events.get(i).fqn(), Manifests.describe(events.get(i)));
        }
        assertThat(first).isEqualTo(expected);
        assertThat(second).isEqualTo(expected);
        assertThat(body).allSatisfy(b -> assertThat(b.refCnt()).isZero());
        assertThat(bytesReceived.get()).isEqualTo(2 * Files.size(FILE));
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
        List<ByteBuf> body = chunks(Files.readAllBytes(FILE), 4096);
        List<ByteBuf> half = body.subList(0, body.size() / 2);
        List<TensorEvent> received = new ArrayList<>();

        StepVerifier.create(decode(Flux.fromIterable(half).concatWith(Flux.error(new IOException("connection reset")))))
                .recordWith(() -> received)
                .thenConsumeWhile(e -> true)
                .expectErrorMessage("connection reset")
                .verify(Duration.ofSeconds(10));

        received.forEach(TensorEvent::release);
        assertThat(half).allSatisfy(b -> assertThat(b.refCnt()).isZero());
        assertThat(spoolInUse()).isEmpty();
        body.subList(body.size() / 2, body.size()).forEach(ByteBuf::release);
    }

    @Test
    void cancellingMidBlobReleasesHeldBuffersAndUndeliveredTensorsAndDeletesTheSpool() throws Exception {
        List<ByteBuf> body = chunks(Files.readAllBytes(FILE), 4096);
        List<TensorEvent> received = new ArrayList<>();

        StepVerifier.create(decode(Flux.fromIterable(body)), 1)
                .recordWith(() -> received)
                .expectNextCount(1)
                .thenCancel()
                .verify(Duration.ofSeconds(10));

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
                .verify(Duration.ofSeconds(10));

        received.forEach(TensorEvent::release);
        assertThat(buffers).allSatisfy(b -> assertThat(b.refCnt()).isZero());
        assertThat(spoolInUse()).isEmpty();
    }

    @Test
    void aSingleBlobIsDescribedFromItsHeaderBeforeAnyDataByteIsReadAndItsTensorsFollow() throws Exception {
        byte[] file = Files.readAllBytes(FILE);
        // The first buffer holds the header and 10 bytes of data.
        int headerEnd = 8 + (int) java.nio.ByteBuffer.wrap(file, 0, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong();
        List<ByteBuf> buffers = new ArrayList<>(List.of(Unpooled.copiedBuffer(file, 0, headerEnd + 10)));
        buffers.addAll(chunks(java.util.Arrays.copyOfRange(file, headerEnd + 10, file.length), 4096));
        AtomicLong requested = new AtomicLong();
        UploadSource source = UploadSource.create(Flux.fromIterable(buffers).doOnRequest(requested::addAndGet), options(true));

        var names = Manifests.of(FILE).keySet();
        StepVerifier.create(source.describe())
                .assertNext(d -> assertThat(d.tensors().orElseThrow()).extracting(TensorInfo::name)
                        .containsExactlyInAnyOrderElementsOf(names))
                .verifyComplete();
        assertThat(requested.get()).as("buffers asked for to describe").isEqualTo(1);
        assertThat(buffers.get(1).refCnt()).isOne();
        List<TensorEvent> events = new ArrayList<>();
        StepVerifier.create(source.tensors())
                .recordWith(() -> events)
                .thenConsumeWhile(e -> true)
                .verifyComplete();
        Map<String, String> described = new TreeMap<>();
        events.forEach(e -> described.put(e.fqn(), Manifests.describe(e)));
        assertThat(described).isEqualTo(Manifests.of(FILE));
        events.forEach(TensorEvent::release);
        assertThat(buffers).allSatisfy(b -> assertThat(b.refCnt()).isZero());
        assertThat(spoolInUse()).isEmpty();
    }

    @Test
    void aStreamedTensorGoesOutAtItsFirstByteAndTheBodyWaitsUntilItsBytesAreWritten() throws Exception {
        byte[] file = Files.readAllBytes(FILE);
        SafetensorsFormat.Header header = SafetensorsFormat.parseHeader(
                java.util.Arrays.copyOfRange(file, 8, 8 + (int) java.nio.ByteBuffer.wrap(file, 0, 8)
                        .order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong()), -1, "test");
        SafetensorsFormat.Entry big = header.entries().stream().max(java.util.Comparator.comparingLong(SafetensorsFormat.Entry::byteSize))
                .orElseThrow();
        int dataStart = (int) header.dataStart();
        // The body up to the big tensor's first 100 bytes, then its rest, then everything after it.
        int cut1 = dataStart + (int) big.begin() + 100;
        int cut2 = dataStart + (int) big.end();
        TestPublisher<ByteBuf> body = TestPublisher.create();
        UploadSource source = UploadSource.create(body.flux(), options(true));
        source.describe().subscribe();
        body.next(Unpooled.copiedBuffer(file, 0, dataStart));
        List<TensorEvent> events = new ArrayList<>();
        var subscriber = source.tensors(new UploadSource.Delivery(name -> name.equals(big.name()), true, java.util.Map.of()))
                .doOnNext(events::add).subscribe();
        body.next(Unpooled.copiedBuffer(file, dataStart, cut1 - dataStart));
        TensorEvent streamed = events.stream().filter(e -> e.fqn().equals(big.name())).findFirst().orElseThrow();
        assertThat(streamed.tensor()).isInstanceOf(StreamingTensor.class);
        assertThat(streamed.tensor().fileRegion()).isEmpty();
        // Its first 100 bytes are not written yet: the body is not read on.
        body.assertMaxRequested(0);

        ByteArrayOutputStream written = new ByteArrayOutputStream();
        Thread writer = Thread.ofPlatform().start(() -> {
            try {
                streamed.tensor().writeTo(chunk -> written.write(chunk.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE)));
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        });
        awaitRequested(body);
        body.next(Unpooled.copiedBuffer(file, cut1, cut2 - cut1));
        writer.join(10_000);
        assertThat(written.toByteArray()).isEqualTo(java.util.Arrays.copyOfRange(file, dataStart + (int) big.begin(), cut2));
        body.next(Unpooled.copiedBuffer(file, cut2, file.length - cut2));
        body.complete();
        Map<String, String> rest = new TreeMap<>();
        events.stream().filter(e -> e != streamed).forEach(e -> rest.put(e.fqn(), Manifests.describe(e)));
        Map<String, String> expected = new TreeMap<>(Manifests.of(FILE));
        expected.remove(big.name());
        assertThat(rest).isEqualTo(expected);
        events.forEach(TensorEvent::release);
        subscriber.dispose();
        assertThat(spoolInUse()).isEmpty();
    }

    private static void awaitRequested(TestPublisher<ByteBuf> body) throws InterruptedException {
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (true) {
            try {
                body.assertMinRequested(1);
                return;
            } catch (AssertionError notYet) {
                if (System.nanoTime() > deadline) {
                    throw notYet;
                }
                Thread.sleep(5);
            }
        }
    }

    @Test
    void aLargeTensorGoesOutInPiecesOfWholeRowsAsTheyLandForAConsumerOfPieces() throws Exception {
        long[] shape = {6, 2048, 3072};
        TensorInfo grouped = new TensorInfo("layers.1.mlp.experts.gate_and_up_projs", DType.BF16, shape);
        byte[] data = new byte[Math.toIntExact(grouped.byteSize())];
        new java.util.Random(1).nextBytes(data);
        byte[] headerBytes = SafetensorsFormat.encodeHeader(SafetensorsFormat.fileOrder(List.of(grouped)));
        byte[] file = new byte[headerBytes.length + data.length];
        System.arraycopy(headerBytes, 0, file, 0, headerBytes.length);
        System.arraycopy(data, 0, file, headerBytes.length, data.length);

        List<TensorEvent> pieces = UploadSource.create(Flux.fromIterable(chunks(file, 1 << 20)), options(false))
                .tensors(new UploadSource.Delivery(name -> false, true, java.util.Map.of())).collectList().block();

        long rowBytes = grouped.byteSize() / shape[0];
        assertThat(pieces).hasSizeGreaterThan(1).allMatch(e -> !e.isWhole() && e.box().size(1) == shape[1]);
        assertThat(pieces).allSatisfy(e -> assertThat(e.tensor().byteSize()).isGreaterThanOrEqualTo(BlobDecoder.MIN_PIECE_BYTES));
        long row = 0;
        for (TensorEvent e : pieces) {
            assertThat(e.box().offset(0)).isEqualTo(row);
            byte[] expected = java.util.Arrays.copyOfRange(data, (int) (row * rowBytes), (int) ((row + e.box().size(0)) * rowBytes));
            assertThat(TensorBytes.of(e.tensor())).isEqualTo(expected);
            row += e.box().size(0);
            e.release();
        }
        assertThat(row).isEqualTo(shape[0]);
        List<TensorEvent> whole = UploadSource.create(Flux.fromIterable(chunks(file, 1 << 20)), options(false)).tensors()
                .collectList().block();
        assertThat(whole).singleElement().matches(TensorEvent::isWhole);
        whole.forEach(TensorEvent::release);
        assertThat(spoolInUse()).isEmpty();
    }

    static final Path RANKS = Path.of("../pipeline/src/test/resources/reference-vectors/hy3-tiny-dcp/sharded");

    @Test
    void aRanksFileOfADeclaredCheckpointComesOutAsPiecesPlacedByItsShardingInfo() throws Exception {
        Path rank = RANKS.resolve("shard-00002-model-00001-of-00001.safetensors");
        List<TensorInfo> declared = io.moeflux.connect.safetensors.SafetensorsSource.open(RANKS).describe().block().tensors().orElseThrow();
        Map<String, TensorInfo> byName = new TreeMap<>();
        declared.forEach(t -> byName.put(t.name(), t));
        Map<String, String> expected = new TreeMap<>();
        for (TensorEvent e : io.moeflux.connect.safetensors.SafetensorsSource.openPart(rank).tensors().collectList().block()) {
            expected.put(e.fqn(), e.box() + " " + java.util.HexFormat.of().formatHex(TensorBytes.of(e.tensor())));
            e.release();
        }

        List<TensorEvent> pieces = UploadSource.create(Flux.fromIterable(chunks(Files.readAllBytes(rank), 4096)), options(false))
                .tensors(new UploadSource.Delivery(name -> false, false, Map.of(), java.util.Optional.of(declared)))
                .collectList().block();

        Map<String, String> actual = new TreeMap<>();
        for (TensorEvent e : pieces) {
            assertThat(e.wholeInfo()).isEqualTo(byName.get(e.fqn()));
            actual.put(e.fqn(), e.box() + " " + java.util.HexFormat.of().formatHex(TensorBytes.of(e.tensor())));
            e.release();
        }
        assertThat(actual).isEqualTo(expected);
        assertThat(pieces).anyMatch(e -> !e.isWhole() && e.box().offset(0) > 0);
        assertThat(spoolInUse()).isEmpty();
    }

    @Test
    void aBlobOfPiecesIsRefusedUnlessItsCheckpointIsDeclaredAndAPieceMustFitIt() throws Exception {
        byte[] rank = Files.readAllBytes(RANKS.resolve("shard-00002-model-00001-of-00001.safetensors"));
        StepVerifier.create(decode(Flux.fromIterable(chunks(rank, 4096))))
                .expectErrorSatisfies(e -> assertThat(e).isInstanceOf(InvalidCheckpointException.class)
                        .hasMessageStartingWith("blob 1 (at body byte 0): holds pieces of tensors (DCP_SHARDING_INFO)"))
                .verify(Duration.ofSeconds(10));

        List<TensorInfo> declared = io.moeflux.connect.safetensors.SafetensorsSource.open(RANKS).describe().block().tensors().orElseThrow()
                .stream().map(t -> t.name().equals("lm_head.weight") ? new TensorInfo(t.name(), t.dtype(), new long[] {1, 1}) : t)
                .toList();
        byte[] whole = Files.readAllBytes(RANKS.resolve("shard-00001-model-00001-of-00001.safetensors"));
        StepVerifier.create(UploadSource.create(Flux.fromIterable(chunks(whole, 4096)), options(false))
                        .tensors(new UploadSource.Delivery(name -> false, false, Map.of(), java.util.Optional.of(declared))))
                .expectErrorSatisfies(e -> assertThat(e).isInstanceOf(InvalidCheckpointException.class)
                        .hasMessageContaining("blob 1 (at body byte 0): tensor lm_head.weight: piece")
                        .hasMessageContaining("does not fit its declared shape [1, 1]"))
                .verify(Duration.ofSeconds(10));
        assertThat(spoolInUse()).isEmpty();
    }
}
