package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.DenseTensor;
import io.moeflux.tensor.Tensors;
import java.io.IOException;
import java.util.List;
import org.junit.jupiter.api.Test;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.test.StepVerifier;
import reactor.test.publisher.TestPublisher;

class CheckpointComparisonTest {
    private static DenseTensor tensor(byte... bytes) {
        return Tensors.of(DType.U8, new long[] {bytes.length}, bytes);
    }

    private static CheckpointSource source(Flux<TensorEvent> events) {
        return new CheckpointSource() {
            @Override
            public Mono<CheckpointDescriptor> describe() {
                return Mono.just(CheckpointDescriptor.UNKNOWN);
            }

            @Override
            public Flux<TensorEvent> tensors() {
                return events;
            }
        };
    }

    @Test
    void equalCheckpointsInAnotherOrderAreIdenticalAndEveryTensorIsReleased() {
        List<DenseTensor> a = List.of(tensor((byte) 1, (byte) 2), tensor((byte) 3));
        List<DenseTensor> b = List.of(tensor((byte) 3), tensor((byte) 1, (byte) 2));
        StepVerifier.create(CheckpointComparison.compare(
                        source(Flux.just(new TensorEvent("x", a.get(0)), new TensorEvent("y", a.get(1)))),
                        source(Flux.just(new TensorEvent("y", b.get(0)), new TensorEvent("x", b.get(1)))),
                        key -> true))
                .assertNext(report -> {
                    assertThat(report.identical()).isTrue();
                    assertThat(report.equalTensors()).isEqualTo(2);
                    assertThat(report.equalBytes()).isEqualTo(3);
                })
                .verifyComplete();
        assertThat(a).allMatch(DenseTensor::isReleased);
        assertThat(b).allMatch(DenseTensor::isReleased);
    }

    @Test
    void theFirstDifferingByteIsReported() {
        StepVerifier.create(CheckpointComparison.compare(
                        source(Flux.just(new TensorEvent("x", tensor((byte) 1, (byte) 2, (byte) 3)))),
                        source(Flux.just(new TensorEvent("x", tensor((byte) 1, (byte) 2, (byte) 4)))),
                        key -> true))
                .assertNext(report -> assertThat(report.differences()).containsExactly(
                        new CheckpointComparison.Difference("x", CheckpointComparison.Kind.BYTES, "first at byte 2")))
                .verifyComplete();
    }

    @Test
    void aSourceErrorFailsTheComparisonAndReleasesTheHeldTensors() {
        DenseTensor heldB = tensor((byte) 9);
        DenseTensor fromA = tensor((byte) 9);
        StepVerifier.create(CheckpointComparison.compare(
                        source(Flux.concat(Flux.just(new TensorEvent("other", fromA)), Flux.error(new IOException("disk gone")))),
                        source(Flux.just(new TensorEvent("kept", heldB))),
                        key -> true))
                .expectErrorMessage("disk gone")
                .verify();
        assertThat(heldB.isReleased()).isTrue();
        assertThat(fromA.isReleased()).isTrue();
    }

    @Test
    void cancellingReleasesTheHeldTensors() {
        DenseTensor heldB = tensor((byte) 9);
        TestPublisher<TensorEvent> a = TestPublisher.create();
        StepVerifier.create(CheckpointComparison.compare(source(a.flux()),
                        source(Flux.just(new TensorEvent("kept", heldB))), key -> true))
                // A is subscribed once B has been read and held.
                .then(a::assertWasSubscribed)
                .thenCancel()
                .verify();
        a.assertCancelled();
        assertThat(heldB.isReleased()).isTrue();
    }

    @Test
    void excludedKeysAreReleasedUncompared() {
        DenseTensor ignoredA = tensor((byte) 1);
        DenseTensor ignoredB = tensor((byte) 2);
        StepVerifier.create(CheckpointComparison.compare(
                        source(Flux.just(new TensorEvent("mtp.w", ignoredA))),
                        source(Flux.just(new TensorEvent("mtp.w", ignoredB))),
                        key -> !key.startsWith("mtp.")))
                .assertNext(report -> {
                    assertThat(report.identical()).isTrue();
                    assertThat(report.tensorsA()).isZero();
                })
                .verifyComplete();
        assertThat(ignoredA.isReleased()).isTrue();
        assertThat(ignoredB.isReleased()).isTrue();
    }
}
