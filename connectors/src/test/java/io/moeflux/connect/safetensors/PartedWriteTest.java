package io.moeflux.connect.safetensors;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.PartedWrite;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.ByteSink;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.Tensor;
import io.moeflux.tensor.TensorInfo;
import io.moeflux.testing.TrackedTensors;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Schedulers;
import reactor.test.StepVerifier;
import reactor.util.retry.Retry;

/**
 * A checkpoint written in parts into one folder: parts run at once, a part that fails or is cancelled
 * gives back what it covered and can be written again over its own bytes, the commit refuses what no
 * completed part covered, and an abort leaves nothing.
 */
class PartedWriteTest {
    private static final int PARTS = 3;

    @TempDir
    Path tmp;

    private final TrackedTensors tracked = new TrackedTensors(11);
    private final List<TensorEvent> pieces = PiecePlacementTest.pieces(tracked);

    private PartedWrite open(Path out) {
        List<TensorInfo> plan = PiecePlacementTest.infos(PiecePlacementTest.tensors(new TrackedTensors(0)));
        return SafetensorsSink.create(SafetensorsSinkOptions.to(out).withMaxShardSize(600))
                .writeInParts(new CheckpointDescriptor(Optional.of(plan), Optional.empty())).orElseThrow();
    }

    /** Part {@code p} of the pieces, the same pieces for the same {@code p} and seed. */
    private List<TensorEvent> part(List<TensorEvent> all, int p) {
        List<TensorEvent> out = new ArrayList<>();
        for (int i = p; i < all.size(); i += PARTS) {
            out.add(all.get(i));
        }
        return out;
    }

    /** Part {@code p} of {@code all}, the other parts' events released. */
    private List<TensorEvent> onlyPart(List<TensorEvent> all, int p) {
        List<TensorEvent> kept = part(all, p);
        all.stream().filter(e -> !kept.contains(e)).forEach(TensorEvent::release);
        return kept;
    }

    @Test
    void partsWrittenAtOnceCommitTheWholeCheckpoint() throws Exception {
        Path out = tmp.resolve("out");
        PartedWrite write = open(out);
        Flux.range(0, PARTS)
                .flatMap(p -> write.part(Flux.fromIterable(part(pieces, p)).subscribeOn(Schedulers.parallel())))
                .then()
                .block(Duration.ofSeconds(30));
        assertThat(write.commit().block(Duration.ofSeconds(30)).tensors()).isEqualTo(6);
        assertThat(Manifests.of(out)).isEqualTo(PiecePlacementTest.expectedManifest(tmp));
        assertThat(tracked.live()).isZero();
    }

    @Test
    void aPartThatFailsHalfWayIsGivenBackAndItsResendOverwritesItsBytes() throws Exception {
        Path out = tmp.resolve("out");
        PartedWrite write = open(out);
        write.part(Flux.fromIterable(part(pieces, 0))).block(Duration.ofSeconds(30));
        // Part 1 as a rank whose connection breaks: its first pieces land, then one writes garbage and fails.
        List<TensorEvent> first = part(pieces, 1);
        TrackedTensors again = new TrackedTensors(11);
        List<TensorEvent> resend = onlyPart(PiecePlacementTest.pieces(again), 1);
        int at = first.size() / 2;
        while (first.get(at).tensor().byteSize() == 0) {
            at++;
        }
        TensorEvent breaking = first.get(at);
        List<TensorEvent> broken = new ArrayList<>(first.subList(0, at));
        broken.add(retensored(breaking, new GarbageThenFailure(breaking.tensor())));
        first.subList(at + 1, first.size()).forEach(TensorEvent::release);
        StepVerifier.create(write.part(Flux.fromIterable(broken)))
                .expectErrorMessage("writing " + breaking.fqn() + ": the connection broke")
                .verify(Duration.ofSeconds(30));

        write.part(Flux.fromIterable(resend)).block(Duration.ofSeconds(30));
        write.part(Flux.fromIterable(part(pieces, 2))).block(Duration.ofSeconds(30));
        write.commit().block(Duration.ofSeconds(30));
        assertThat(Manifests.of(out)).isEqualTo(PiecePlacementTest.expectedManifest(tmp));
        assertThat(tracked.live()).isZero();
        assertThat(again.live()).isZero();
    }

    @Test
    void aPartGivenBackAndNeverSentAgainFailsTheCommitNamingWhatNeverArrived() {
        Path out = tmp.resolve("out");
        PartedWrite write = open(out);
        write.part(Flux.fromIterable(part(pieces, 0))).block(Duration.ofSeconds(30));
        write.part(Flux.fromIterable(part(pieces, 2))).block(Duration.ofSeconds(30));
        StepVerifier.create(write.part(Flux.fromIterable(part(pieces, 1)).concatWith(Mono.error(new IOException("cut")))))
                .expectErrorMessage("cut")
                .verify(Duration.ofSeconds(30));
        assertThatThrownBy(() -> write.commit().block(Duration.ofSeconds(30)))
                .isInstanceOf(InvalidCheckpointException.class)
                .hasMessageContaining("never arrived");
        assertThat(out).doesNotExist();
        assertThat(stagingFolders()).isEmpty();
        assertThat(tracked.live()).isZero();
    }

    @Test
    void aPartOverlappingAnotherIsRefusedAndTheOthersGoOn() throws Exception {
        Path out = tmp.resolve("out");
        PartedWrite write = open(out);
        write.part(Flux.fromIterable(part(pieces, 0))).block(Duration.ofSeconds(30));
        TensorEvent overlapping = part(pieces, 0).getFirst();
        TensorEvent intruder = TensorEvent.piece(overlapping.fqn(), overlapping.wholeShape(), overlapping.box().offsets(),
                tracked.random(overlapping.tensor().dtype(), overlapping.tensor().shape()));
        StepVerifier.create(write.part(Flux.just(intruder)))
                .expectErrorSatisfies(e -> assertThat(e).isInstanceOf(InvalidCheckpointException.class)
                        .hasMessageContaining("arrived twice"))
                .verify(Duration.ofSeconds(30));
        write.part(Flux.fromIterable(part(pieces, 1))).block(Duration.ofSeconds(30));
        write.part(Flux.fromIterable(part(pieces, 2))).block(Duration.ofSeconds(30));
        write.commit().block(Duration.ofSeconds(30));
        assertThat(Manifests.of(out)).isEqualTo(PiecePlacementTest.expectedManifest(tmp));
        assertThat(tracked.live()).isZero();
    }

    @Test
    void aCancelledPartIsGivenBackOnceItsWritesHaveStopped() throws Exception {
        Path out = tmp.resolve("out");
        PartedWrite write = open(out);
        write.part(Flux.fromIterable(part(pieces, 0))).block(Duration.ofSeconds(30));
        write.part(Flux.fromIterable(part(pieces, 2))).block(Duration.ofSeconds(30));
        List<TensorEvent> first = part(pieces, 1);
        CountDownLatch writing = new CountDownLatch(1);
        CountDownLatch release = new CountDownLatch(1);
        TensorEvent held = first.stream().filter(e -> e.tensor().byteSize() > 0).toList().getLast();
        List<TensorEvent> stuck = new ArrayList<>(first);
        stuck.remove(held);
        stuck.add(retensored(held, new Blocking(held.tensor(), writing, release)));
        Disposable running = write.part(Flux.fromIterable(stuck)).subscribe();
        assertThat(writing.await(30, TimeUnit.SECONDS)).isTrue();
        running.dispose();
        release.countDown();

        // The resend waits for the give-back, which waits for the blocked write: until then it overlaps.
        List<TensorEvent> resend = onlyPart(PiecePlacementTest.pieces(new TrackedTensors(11)), 1);
        Mono.defer(() -> write.part(Flux.fromIterable(resend.stream().map(PartedWriteTest::copy).toList())))
                .retryWhen(Retry.fixedDelay(200, Duration.ofMillis(25)).filter(e -> e.getMessage().contains("arrived twice")))
                .block(Duration.ofSeconds(30));
        resend.forEach(TensorEvent::release);
        write.commit().block(Duration.ofSeconds(30));
        assertThat(Manifests.of(out)).isEqualTo(PiecePlacementTest.expectedManifest(tmp));
        assertThat(tracked.live()).isZero();
    }

    @Test
    void anAbortLeavesNothingAndReleasesEverything() throws Exception {
        Path out = tmp.resolve("out");
        PartedWrite write = open(out);
        write.part(Flux.fromIterable(part(pieces, 0))).block(Duration.ofSeconds(30));
        part(pieces, 1).forEach(TensorEvent::release);
        part(pieces, 2).forEach(TensorEvent::release);
        write.abort().block(Duration.ofSeconds(30));
        assertThat(out).doesNotExist();
        assertThat(stagingFolders()).isEmpty();
        assertThat(tracked.live()).isZero();
        StepVerifier.create(write.commit()).expectError().verify(Duration.ofSeconds(30));
    }

    private List<Path> stagingFolders() {
        try (Stream<Path> files = Files.list(tmp)) {
            return files.filter(f -> f.getFileName().toString().startsWith(".out.partial-")).toList();
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    /** A fresh event of the same piece and bytes, so one list can be sent more than once. */
    private static TensorEvent copy(TensorEvent e) {
        return retensored(e, io.moeflux.tensor.Tensors.of(e.tensor().dtype(), e.tensor().shape(), TrackedTensors.bytes(e.tensor())));
    }

    /** The same piece of the same tensor, its bytes from {@code tensor}. */
    private static TensorEvent retensored(TensorEvent e, Tensor tensor) {
        return e.isWhole() ? new TensorEvent(e.fqn(), tensor) : TensorEvent.piece(e.fqn(), e.wholeShape(), e.box().offsets(), tensor);
    }

    /** A tensor of another's type and shape, released with it, whose bytes come otherwise. */
    private interface Standing extends Tensor {
        Tensor real();

        @Override
        default DType dtype() {
            return real().dtype();
        }

        @Override
        default long[] shape() {
            return real().shape();
        }

        @Override
        default void release() {
            real().release();
        }
    }

    /** Writes its first half as 0xA5 bytes, then fails as a broken connection does. */
    private record GarbageThenFailure(Tensor real) implements Standing {
        @Override
        public void writeTo(ByteSink sink) throws IOException {
            byte[] garbage = new byte[(int) Math.max(1, real.byteSize() / 2)];
            java.util.Arrays.fill(garbage, (byte) 0xA5);
            sink.write(MemorySegment.ofArray(garbage));
            throw new IOException("the connection broke");
        }
    }

    /** Writes once {@code opened} opens, after saying it is {@code writing}. */
    private record Blocking(Tensor real, CountDownLatch writing, CountDownLatch opened) implements Standing {
        @Override
        public void writeTo(ByteSink sink) throws IOException {
            writing.countDown();
            try {
                opened.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException(e);
            }
            real.writeTo(sink);
        }
    }
}
