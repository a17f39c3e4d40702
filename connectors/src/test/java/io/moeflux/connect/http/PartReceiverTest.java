package io.moeflux.connect.http;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.connect.HeaderTooLargeException;
import io.moeflux.connect.InvalidCheckpointException;
import io.netty.buffer.ByteBuf;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import reactor.core.publisher.Flux;
import reactor.test.StepVerifier;

/** One part of a multi-part upload received whole into blob files, or dropped whole. */
class PartReceiverTest {
    static final Path BLOB = UploadSourceTest.FILE;

    @TempDir
    Path dir;

    private UploadSourceOptions options(long maxHeaderBytes) {
        return new UploadSourceOptions(dir, maxHeaderBytes, false, UploadSourceOptions.HeaderAllowance.UNLIMITED,
                UploadSourceOptions.Listener.NONE, 0);
    }

    private Flux<ByteBuf> body(byte[] bytes, int chunk) {
        return Flux.fromIterable(UploadSourceTest.chunks(bytes, chunk));
    }

    private List<Path> left() throws Exception {
        try (Stream<Path> files = Files.list(dir)) {
            return files.toList();
        }
    }

    @ParameterizedTest(name = "chunks of {0} bytes")
    @ValueSource(ints = {1, 7, 4096, 1 << 20})
    void twoBlobsBecomeTwoFilesByteForByteWhateverTheChunking(int chunk) throws Exception {
        byte[] blob = Files.readAllBytes(BLOB);
        byte[] two = Arrays.copyOf(blob, blob.length * 2);
        System.arraycopy(blob, 0, two, blob.length, blob.length);

        List<Path> files = PartReceiver.receive(body(two, chunk), dir, "part-00001", options(1 << 20)).block(Duration.ofSeconds(30));

        assertThat(files).extracting(f -> f.getFileName().toString())
                .containsExactly("part-00001-blob-00001.safetensors", "part-00001-blob-00002.safetensors");
        for (Path f : files) {
            assertThat(Files.readAllBytes(f)).isEqualTo(blob);
        }
    }

    @Test
    void aTruncatedBodyIsRefusedNamingTheBlobAndLeavesNoFile() throws Exception {
        byte[] blob = Files.readAllBytes(BLOB);
        StepVerifier.create(PartReceiver.receive(body(Arrays.copyOf(blob, blob.length - 10), 4096), dir, "part-00002", options(1 << 20)))
                .expectErrorSatisfies(e -> assertThat(e).isInstanceOf(InvalidCheckpointException.class)
                        .hasMessageStartingWith("part-00002 blob 1 (at body byte 0): truncated"))
                .verify(Duration.ofSeconds(30));
        assertThat(left()).isEmpty();
    }

    @Test
    void aBodyThatBreaksLeavesNoFile() throws Exception {
        byte[] blob = Files.readAllBytes(BLOB);
        Flux<ByteBuf> breaking = body(Arrays.copyOf(blob, blob.length / 2), 4096)
                .concatWith(Flux.error(new java.io.IOException("connection reset")));
        StepVerifier.create(PartReceiver.receive(breaking, dir, "part-00003", options(1 << 20)))
                .verifyErrorMessage("connection reset");
        assertThat(left()).isEmpty();
    }

    @Test
    void aCancelLeavesNoFile() throws Exception {
        byte[] blob = Files.readAllBytes(BLOB);
        Flux<ByteBuf> stalled = body(Arrays.copyOf(blob, blob.length / 2), 4096).concatWith(Flux.never());
        StepVerifier.create(PartReceiver.receive(stalled, dir, "part-00004", options(1 << 20)))
                .thenAwait(Duration.ofMillis(50))
                .thenCancel()
                .verify(Duration.ofSeconds(30));
        assertThat(left()).isEmpty();
    }

    @Test
    void aHeaderOverTheLimitIsRefusedBeforeItIsRead() throws Exception {
        StepVerifier.create(PartReceiver.receive(body(Files.readAllBytes(BLOB), 4096), dir, "part-00005", options(64)))
                .expectError(HeaderTooLargeException.class)
                .verify(Duration.ofSeconds(30));
        assertThat(left()).isEmpty();
    }

    @Test
    void anEmptyBodyIsRefused() {
        StepVerifier.create(PartReceiver.receive(Flux.empty(), dir, "part-00006", options(1 << 20)))
                .verifyErrorMessage("part-00006: empty body: expected one or more safetensors blobs");
    }
}
