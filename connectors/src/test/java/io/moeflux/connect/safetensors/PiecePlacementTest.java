package io.moeflux.connect.safetensors;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.TensorInfo;
import io.moeflux.testing.Pieces;
import io.moeflux.testing.TrackedTensors;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import reactor.core.publisher.Flux;

/** The folder sink places pieces of tensors, in any order, and commits only tensors covered exactly once. */
class PiecePlacementTest {
    @TempDir
    Path tmp;

    /** Tensors of one to three dimensions, whole; the same for the same seed. */
    static List<TensorEvent> tensors(TrackedTensors t) {
        return List.of(
                t.event("rows", DType.BF16, 12, 10),
                t.event("cols", DType.F32, 6, 9),
                t.event("grid", DType.BF16, 8, 8),
                t.event("experts", DType.BF16, 4, 6, 10),
                t.event("vector", DType.I64, 7),
                t.event("whole", DType.U8, 3, 5));
    }

    /**
     * The same tensors in pieces: row ranges (contiguous), column ranges (strided), a grid of both, and the
     * middle dimension of a 3-D tensor (strided runs of whole last rows), with an empty trailing piece.
     */
    static List<TensorEvent> pieces(TrackedTensors t) {
        List<TensorEvent> whole = tensors(t);
        List<TensorEvent> out = new ArrayList<>();
        out.addAll(Pieces.cut(t, whole.get(0), 0, 5));
        out.addAll(Pieces.cut(t, whole.get(1), 1, 4));
        for (TensorEvent half : Pieces.cut(t, whole.get(2), 0, 2)) {
            out.addAll(Pieces.cut(t, half, 1, 3));
        }
        out.addAll(Pieces.cut(t, whole.get(3), 1, 4));
        out.addAll(Pieces.cut(t, whole.get(4), 0, 8));
        out.add(whole.get(5));
        return out;
    }

    static List<TensorInfo> infos(List<TensorEvent> whole) {
        List<TensorInfo> infos = whole.stream().map(TensorEvent::wholeInfo).toList();
        whole.forEach(TensorEvent::release);
        return infos;
    }

    static Map<String, String> expectedManifest(Path tmp) throws Exception {
        Path reference = tmp.resolve("whole");
        TrackedTensors t = new TrackedTensors(11);
        SafetensorsSink.create(SafetensorsSinkOptions.to(reference)).write(CheckpointDescriptor.UNKNOWN,
                Flux.fromIterable(tensors(t))).block();
        return Manifests.of(reference);
    }

    @ParameterizedTest
    @ValueSource(booleans = {true, false})
    void piecesInShuffledOrderGiveTheWholeTensors(boolean planned) throws Exception {
        TrackedTensors t = new TrackedTensors(11);
        List<TensorEvent> in = new ArrayList<>(pieces(t));
        assertThat(in).anyMatch(e -> !e.isWhole() && e.box().isEmpty());
        Collections.shuffle(in, new Random(3));
        Path out = tmp.resolve("pieces");
        CheckpointDescriptor descriptor = planned
                ? new CheckpointDescriptor(Optional.of(infos(tensors(new TrackedTensors(0)))), Optional.empty())
                : CheckpointDescriptor.UNKNOWN;
        SafetensorsSink.create(SafetensorsSinkOptions.to(out).withMaxShardSize(600)).write(descriptor, Flux.fromIterable(in)).block();
        assertThat(t.live()).isZero();
        assertThat(Manifests.of(out)).isEqualTo(expectedManifest(tmp));
    }

    @ParameterizedTest
    @ValueSource(booleans = {true, false})
    void aGapIsRefusedNamingTheTensorAndTheRegion(boolean planned) {
        TrackedTensors t = new TrackedTensors(11);
        List<TensorEvent> in = new ArrayList<>(pieces(t));
        TensorEvent dropped = in.stream().filter(e -> e.fqn().equals("cols") && e.box().offset(1) == 3).findFirst().orElseThrow();
        in.remove(dropped);
        dropped.release();
        Path out = tmp.resolve("gap");
        CheckpointDescriptor descriptor = planned
                ? new CheckpointDescriptor(Optional.of(infos(tensors(new TrackedTensors(0)))), Optional.empty())
                : CheckpointDescriptor.UNKNOWN;
        assertThatThrownBy(() -> SafetensorsSink.create(SafetensorsSinkOptions.to(out)).write(descriptor, Flux.fromIterable(in)).block())
                .isInstanceOf(InvalidCheckpointException.class)
                .hasMessage("tensor cols: region [0:6, 3:6] of [6, 9] never arrived (2 pieces did)");
        assertThat(out).doesNotExist();
        assertThat(t.live()).isZero();
    }

    @Test
    void anOverlapIsRefusedNamingTheTensorAndTheRegionBeforeItIsWritten() {
        TrackedTensors t = new TrackedTensors(11);
        List<TensorEvent> in = new ArrayList<>(pieces(t));
        in.add(TensorEvent.piece("grid", new long[] {8, 8}, new long[] {2, 1}, t.random(DType.BF16, 3, 2)));
        Path out = tmp.resolve("overlap");
        assertThatThrownBy(() -> SafetensorsSink.create(SafetensorsSinkOptions.to(out))
                .write(new CheckpointDescriptor(Optional.of(infos(tensors(new TrackedTensors(0)))), Optional.empty()),
                        Flux.fromIterable(in)).block())
                .isInstanceOf(InvalidCheckpointException.class)
                .hasMessageContaining("tensor grid: region [2:4, 1:3] arrived twice (pieces [0:4, 0:3] and [2:5, 1:3])");
        assertThat(out).doesNotExist();
        assertThat(t.live()).isZero();
    }

    @Test
    void aPieceOfAnotherTypeOrWholeShapeIsRefused() {
        TrackedTensors t = new TrackedTensors(11);
        List<TensorInfo> plan = infos(tensors(new TrackedTensors(0)));
        TensorEvent otherType = TensorEvent.piece("rows", new long[] {12, 10}, new long[] {0, 0}, t.random(DType.F16, 2, 10));
        assertThatThrownBy(() -> SafetensorsSink.create(SafetensorsSinkOptions.to(tmp.resolve("a")))
                .write(new CheckpointDescriptor(Optional.of(plan), Optional.empty()), Flux.just(otherType)).block())
                .hasMessage("tensor rows arrived as F16[12, 10] (piece [0:2, 0:10]) but is BF16[12, 10] in this checkpoint");
        TensorEvent first = TensorEvent.piece("rows", new long[] {12, 10}, new long[] {0, 0}, t.random(DType.BF16, 2, 10));
        TensorEvent otherShape = TensorEvent.piece("rows", new long[] {14, 10}, new long[] {2, 0}, t.random(DType.BF16, 2, 10));
        assertThatThrownBy(() -> SafetensorsSink.create(SafetensorsSinkOptions.to(tmp.resolve("b")))
                .write(CheckpointDescriptor.UNKNOWN, Flux.just(first, otherShape)).block())
                .hasMessage("tensor rows arrived as BF16[14, 10] (piece [2:4, 0:10]) but is BF16[12, 10] in this checkpoint");
        assertThat(tmp.resolve("a")).doesNotExist();
        assertThat(tmp.resolve("b")).doesNotExist();
        assertThat(t.live()).isZero();
    }
}
