package io.moeflux.serve;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.moeflux.connect.safetensors.Placement;
import io.moeflux.hy3.MergedPart;
import io.moeflux.hy3.SplitPart;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.DenseTensor;
import io.moeflux.tensor.TensorInfo;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.ReentrantLock;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Expert slabs written in place: transposition, staging memory, failures and closing. */
class SlabWriterTest {
    /** Each weight is [ROWS, COLS] BF16; a gate_and_up slab is [COLS, 2 * ROWS], a down slab [COLS, ROWS]. */
    static final int ROWS = 4;
    static final int COLS = 8;
    static final long WEIGHT_BYTES = ROWS * COLS * 2;
    static final TensorInfo GATE_AND_UP = new TensorInfo("layers.1.mlp.experts.gate_and_up_projs", DType.BF16,
            new long[] {2, COLS, 2 * ROWS});
    static final TensorInfo DOWN = new TensorInfo("layers.1.mlp.experts.down_projs", DType.BF16, new long[] {2, COLS, ROWS});
    static final TensorInfo WEIGHT = new TensorInfo("experts.0.down_proj.weight", DType.BF16, new long[] {ROWS, COLS});

    @TempDir
    Path dir;
    FileChannel out;
    Placement place;

    @BeforeEach
    void openOutput() throws IOException {
        out = FileChannel.open(dir.resolve("out"), StandardOpenOption.CREATE_NEW, StandardOpenOption.READ, StandardOpenOption.WRITE);
        place = new Placement(out, 16, GATE_AND_UP.byteSize(), new ReentrantLock());
    }

    @AfterEach
    void closeOutput() throws IOException {
        out.close();
    }

    /** Weight {@code seed}: element (r, c) is seed * 100 + r * COLS + c, exact in BF16 for these sizes. */
    static short element(int seed, int r, int c) {
        return (short) (Float.floatToIntBits(seed * 100 + r * COLS + c) >>> 16);
    }

    record Tracked(DenseTensor tensor, AtomicBoolean released) {}

    static Tracked weight(int seed) {
        MemorySegment bytes = MemorySegment.ofArray(new byte[(int) WEIGHT_BYTES]);
        for (int r = 0; r < ROWS; r++) {
            for (int c = 0; c < COLS; c++) {
                bytes.set(ValueLayout.JAVA_SHORT_UNALIGNED, (r * COLS + c) * 2L, element(seed, r, c));
            }
        }
        AtomicBoolean released = new AtomicBoolean();
        return new Tracked(new DenseTensor(DType.BF16, new long[] {ROWS, COLS}, bytes, () -> released.set(true)), released);
    }

    @Test
    void aSlabIsWrittenTransposedAtItsPlaceOnceItsLastWeightArrivesAndItsEventsFollow() throws Exception {
        SlabWriter slabs = new SlabWriter(1 << 20, Runnable::run);
        Tracked gate = weight(1);
        Tracked up = weight(2);

        slabs.add("experts.1.gate_proj.weight", gate.tensor(), new MergedPart(GATE_AND_UP, 1, 0, 2), place);
        assertThat(slabs.drainWritten()).isEmpty();
        slabs.add("experts.1.up_proj.weight", up.tensor(), new MergedPart(GATE_AND_UP, 1, 1, 2), place);

        List<TensorEvent> written = slabs.drainWritten();
        assertThat(written).extracting(TensorEvent::fqn).containsExactly("experts.1.gate_proj.weight", "experts.1.up_proj.weight");
        assertThat(written).allSatisfy(e -> assertThat(e.tensor().shape()).containsExactly(ROWS, COLS));
        assertThat(gate.released()).isTrue();
        assertThat(up.released()).isTrue();
        long slabBytes = (long) COLS * 2 * ROWS * 2;
        ByteBuffer slab = ByteBuffer.allocate((int) slabBytes).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        out.read(slab, place.offset() + slabBytes);
        for (int c = 0; c < COLS; c++) {
            for (int r = 0; r < ROWS; r++) {
                assertThat(slab.getShort((c * 2 * ROWS + r) * 2)).as("gate^T[%d][%d]", c, r).isEqualTo(element(1, r, c));
                assertThat(slab.getShort((c * 2 * ROWS + ROWS + r) * 2)).as("up^T[%d][%d]", c, r).isEqualTo(element(2, r, c));
            }
        }
        assertThat(out.size()).as("nothing is written past expert 1's slab").isEqualTo(place.offset() + 2 * slabBytes);
        ByteBuffer slab0 = ByteBuffer.allocate((int) slabBytes);
        out.read(slab0, place.offset());
        assertThat(slab0.array()).as("expert 0's slab is not written yet: a hole, all zeros").containsOnly((byte) 0);
        assertThat(slabs.finish()).isEmpty();
    }

    /**
     * Weights wider than a tile are staged in several column blocks (the last one narrower, and not a
     * multiple of 4, so its tile takes the kernel's general path), filled in pieces that straddle rows
     * and blocks, as socket reads cut them.
     */
    @Test
    void stagedWeightsFilledPieceByPieceMakeTheSameSlabAsWholeOnes() throws Exception {
        int rows = 64;
        int cols = 4099;
        TensorInfo merged = new TensorInfo("layers.1.mlp.experts.gate_and_up_projs", DType.BF16, new long[] {1, cols, 2 * rows});
        assertThat(io.moeflux.tensor.StackedTransposeTensor.tileRows(cols, 2 * rows, DType.BF16)).isLessThan(cols);
        java.util.Random random = new java.util.Random(7);
        byte[][] weights = new byte[2][rows * cols * 2];
        random.nextBytes(weights[0]);
        random.nextBytes(weights[1]);
        Placement whole = new Placement(out, 0, merged.byteSize(), new ReentrantLock());
        Path staged = dir.resolve("staged");
        try (FileChannel stagedOut = FileChannel.open(staged, StandardOpenOption.CREATE_NEW, StandardOpenOption.READ,
                StandardOpenOption.WRITE)) {
            Placement pieces = new Placement(stagedOut, 0, merged.byteSize(), new ReentrantLock());
            SlabWriter direct = new SlabWriter(0, Runnable::run);
            SlabWriter viaStaging = new SlabWriter(2 << 20, Runnable::run);
            for (int j = 0; j < 2; j++) {
                MergedPart part = new MergedPart(merged, 0, j, 2);
                TensorInfo info = new TensorInfo("w" + j, DType.BF16, new long[] {rows, cols});
                MemorySegment bytes = MemorySegment.ofArray(weights[j]);
                direct.add("w" + j, new DenseTensor(DType.BF16, info.shape(), bytes, () -> {}), part, whole);
                SlabWriter.Staged memory = viaStaging.stage(info, part).orElseThrow();
                for (long at = 0; at < bytes.byteSize(); ) {
                    long n = Math.min(bytes.byteSize() - at, 1 + random.nextInt(20_000));
                    memory.put(at, bytes.asSlice(at, n), n);
                    at += n;
                }
                viaStaging.add("w" + j, memory.toTensor(), part, pieces);
            }
            assertThat(direct.finish()).hasSize(2);
            assertThat(viaStaging.finish()).hasSize(2);
        }
        assertThat(java.nio.file.Files.readAllBytes(staged)).isEqualTo(java.nio.file.Files.readAllBytes(dir.resolve("out")));
        assertThat(out.size()).isEqualTo(merged.byteSize());
    }

    @Test
    void stagingFullOfSlabsBeingWrittenMakesTheReceiverWaitInsteadOfGrowing() throws Exception {
        ConcurrentLinkedQueue<Runnable> queued = new ConcurrentLinkedQueue<>();
        SlabWriter slabs = new SlabWriter(WEIGHT_BYTES, queued::add);
        MergedPart down = new MergedPart(DOWN, 0, 0, 1);
        SlabWriter.Staged first = slabs.stage(WEIGHT, down).orElseThrow();
        first.put(0, weight(3).tensor().data(), WEIGHT_BYTES);
        slabs.add("experts.0.down_proj.weight", first.toTensor(), down, place);

        CompletableFuture<Optional<SlabWriter.Staged>> second = CompletableFuture.supplyAsync(() -> {
            try {
                return slabs.stage(WEIGHT, down);
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        });
        assertThatThrownBy(() -> second.get(300, TimeUnit.MILLISECONDS)).isInstanceOf(TimeoutException.class);

        queued.poll().run();
        assertThat(second.get(10, TimeUnit.SECONDS)).as("the written slab's memory, reused").isPresent();
        assertThat(slabs.drainWritten()).extracting(TensorEvent::fqn).containsExactly("experts.0.down_proj.weight");
        slabs.close();
    }

    @Test
    void stagingHeldByWeightsWaitingForTheirPartnersSpoolsFurtherWeightsAtOnce() throws Exception {
        SlabWriter slabs = new SlabWriter(WEIGHT_BYTES, Runnable::run);
        MergedPart gatePart = new MergedPart(GATE_AND_UP, 0, 0, 2);
        SlabWriter.Staged gate = slabs.stage(WEIGHT, gatePart).orElseThrow();
        slabs.add("experts.0.gate_proj.weight", gate.toTensor(), gatePart, place);

        assertThat(slabs.stage(WEIGHT, gatePart)).as("nothing being written can free memory").isEmpty();

        // The partner arrives from the spool, and the slab is written from both.
        slabs.add("experts.0.up_proj.weight", weight(4).tensor(), new MergedPart(GATE_AND_UP, 0, 1, 2), place);
        assertThat(slabs.drainWritten()).hasSize(2);
        assertThat(slabs.stage(WEIGHT, gatePart)).isPresent();
        slabs.close();
    }

    @Test
    void aSlabThatCannotBeWrittenFailsTheUploadNamingIt() throws Exception {
        SlabWriter slabs = new SlabWriter(1 << 20, Runnable::run);
        out.close();
        Tracked down = weight(5);

        slabs.add("experts.1.down_proj.weight", down.tensor(), new MergedPart(DOWN, 1, 0, 1), place);

        assertThatThrownBy(slabs::drainWritten).isInstanceOf(IOException.class)
                .hasMessageStartingWith("writing expert slab 1 of layers.1.mlp.experts.down_projs");
        assertThatThrownBy(slabs::finish).isInstanceOf(IOException.class);
        assertThatThrownBy(() -> slabs.stage(WEIGHT, new MergedPart(DOWN, 0, 0, 1))).isInstanceOf(IOException.class);
        assertThat(down.released()).isTrue();
    }

    @Test
    void closingReleasesWeightsStillWaitingForTheirPartnersAndRefusesMore() throws Exception {
        SlabWriter slabs = new SlabWriter(1 << 20, Runnable::run);
        Tracked gate = weight(6);
        slabs.add("experts.0.gate_proj.weight", gate.tensor(), new MergedPart(GATE_AND_UP, 0, 0, 2), place);
        SlabWriter.Staged unfinished = slabs.stage(WEIGHT, new MergedPart(GATE_AND_UP, 0, 1, 2)).orElseThrow();

        slabs.close();
        unfinished.discard();

        assertThat(gate.released()).isTrue();
        Tracked late = weight(7);
        slabs.add("experts.0.up_proj.weight", late.tensor(), new MergedPart(GATE_AND_UP, 0, 1, 2), place);
        assertThat(late.released()).isTrue();
        assertThat(slabs.drainWritten()).isEmpty();
        assertThatThrownBy(() -> slabs.stage(WEIGHT, new MergedPart(DOWN, 0, 0, 1))).isInstanceOf(IllegalStateException.class);
        assertThat(out.size()).as("nothing written").isZero();
    }

    @Test
    void finishWaitsForEverySlabBeingWritten() throws Exception {
        List<Runnable> queued = new ArrayList<>();
        SlabWriter slabs = new SlabWriter(1 << 20, queued::add);
        slabs.add("experts.0.down_proj.weight", weight(8).tensor(), new MergedPart(DOWN, 0, 0, 1), place);
        slabs.add("experts.1.down_proj.weight", weight(9).tensor(), new MergedPart(DOWN, 1, 0, 1), place);

        CompletableFuture<List<TensorEvent>> finished = CompletableFuture.supplyAsync(() -> {
            try {
                return slabs.finish();
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        });
        queued.get(0).run();
        assertThatThrownBy(() -> finished.get(300, TimeUnit.MILLISECONDS)).isInstanceOf(TimeoutException.class);
        queued.get(1).run();

        assertThat(finished.get(10, TimeUnit.SECONDS)).extracting(TensorEvent::fqn)
                .containsExactlyInAnyOrder("experts.0.down_proj.weight", "experts.1.down_proj.weight");
        assertThat(out.size()).isEqualTo(place.offset() + DOWN.byteSize());
    }

    /** A to-hf grouped gate_and_up tensor [2 experts, hidden COLS, 2 * inter ROWS]: each expert's slab is [COLS, 2 * ROWS]. */
    static final TensorInfo GROUPED = new TensorInfo("layers.1.mlp.experts.gate_and_up_projs", DType.BF16, new long[] {2, COLS, 2 * ROWS});
    static final long SPLIT_BYTES = ROWS * COLS * 2;

    /** Each expert's gate and up weight [ROWS, COLS], placed one after another from byte 16 of the output. */
    InPlaceLayout.SplitTarget splitTarget() {
        List<InPlaceLayout.SplitSlice> slices = new ArrayList<>();
        for (int e = 0; e < 2; e++) {
            for (int proj = 0; proj < 2; proj++) {
                String name = "layers.1.mlp.experts." + e + (proj == 0 ? ".gate_proj.weight" : ".up_proj.weight");
                slices.add(new InPlaceLayout.SplitSlice(new SplitPart(new TensorInfo(name, DType.BF16, new long[] {ROWS, COLS}), e,
                        (long) proj * ROWS, ROWS), new Placement(out, 16 + (2L * e + proj) * SPLIT_BYTES, SPLIT_BYTES, new ReentrantLock())));
            }
        }
        return InPlaceLayout.SplitTarget.of(GROUPED, slices);
    }

    /** Expert {@code e}'s slab of the grouped tensor: element (h, c) is {@link #element}(e, h, c). */
    static MemorySegment expertSlab(int e) {
        MemorySegment bytes = MemorySegment.ofArray(new byte[COLS * 2 * ROWS * 2]);
        for (int h = 0; h < COLS; h++) {
            for (int c = 0; c < 2 * ROWS; c++) {
                bytes.set(ValueLayout.JAVA_SHORT_UNALIGNED, (h * 2L * ROWS + c) * 2, element(e, h, c));
            }
        }
        return bytes;
    }

    @Test
    void anExpertSlabIsCutIntoItsWeightsAtTheirPlacesAndTheGroupedEventFollowsTheLastSlab() throws Exception {
        SlabWriter slabs = new SlabWriter(1 << 20, Runnable::run);
        InPlaceLayout.SplitTarget target = splitTarget();

        for (int e = 0; e < 2; e++) {
            assertThat(slabs.drainWritten()).as("no event before the last slab").isEmpty();
            SlabWriter.ExpertSlab slab = slabs.stageExpert(GROUPED.name(), target, e);
            MemorySegment bytes = expertSlab(e);
            // In two pieces that cut a row, as socket reads do.
            slab.put(0, bytes, 21);
            slab.put(21, bytes.asSlice(21), bytes.byteSize() - 21);
            slabs.addExpert(slab);
        }

        List<TensorEvent> written = slabs.drainWritten();
        assertThat(written).extracting(TensorEvent::fqn).containsExactly(GROUPED.name());
        assertThat(written.getFirst().tensor().shape()).containsExactly(2, COLS, 2 * ROWS);
        for (int e = 0; e < 2; e++) {
            for (int proj = 0; proj < 2; proj++) {
                ByteBuffer weight = ByteBuffer.allocate((int) SPLIT_BYTES).order(java.nio.ByteOrder.LITTLE_ENDIAN);
                out.read(weight, 16 + (2L * e + proj) * SPLIT_BYTES);
                for (int r = 0; r < ROWS; r++) {
                    for (int h = 0; h < COLS; h++) {
                        assertThat(weight.getShort((r * COLS + h) * 2)).as("expert %d, %s[%d][%d]", e, proj == 0 ? "gate" : "up", r, h)
                                .isEqualTo(element(e, h, proj * ROWS + r));
                    }
                }
            }
        }
        assertThat(slabs.finish()).isEmpty();
    }

    @Test
    void stagingFullOfAnExpertSlabBeingWrittenMakesTheReceiverWaitForIt() throws Exception {
        ConcurrentLinkedQueue<Runnable> queued = new ConcurrentLinkedQueue<>();
        InPlaceLayout.SplitTarget target = splitTarget();
        SlabWriter slabs = new SlabWriter(target.slabBytes(), queued::add);
        SlabWriter.ExpertSlab first = slabs.stageExpert(GROUPED.name(), target, 0);
        first.put(0, expertSlab(0), target.slabBytes());
        slabs.addExpert(first);

        CompletableFuture<SlabWriter.ExpertSlab> second = CompletableFuture.supplyAsync(() -> {
            try {
                return slabs.stageExpert(GROUPED.name(), target, 1);
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        });
        assertThatThrownBy(() -> second.get(300, TimeUnit.MILLISECONDS)).isInstanceOf(TimeoutException.class);

        queued.poll().run();
        assertThat(second.get(10, TimeUnit.SECONDS)).as("the written slab's memory, reused").isNotNull();
        assertThat(slabs.drainWritten()).as("one slab of two is on file").isEmpty();
        slabs.close();
    }

    @Test
    void anExpertSlabThatCannotBeWrittenFailsTheUploadNamingIt() throws Exception {
        SlabWriter slabs = new SlabWriter(1 << 20, Runnable::run);
        InPlaceLayout.SplitTarget target = splitTarget();
        out.close();
        SlabWriter.ExpertSlab slab = slabs.stageExpert(GROUPED.name(), target, 1);
        slab.put(0, expertSlab(1), target.slabBytes());

        slabs.addExpert(slab);

        assertThatThrownBy(slabs::drainWritten).isInstanceOf(IOException.class)
                .hasMessageStartingWith("writing expert 1's weights out of layers.1.mlp.experts.gate_and_up_projs");
        assertThatThrownBy(() -> slabs.stageExpert(GROUPED.name(), target, 0)).isInstanceOf(IOException.class);
    }

    @Test
    void anExpertSlabHandedOverAfterClosingIsDroppedUnwritten() throws Exception {
        SlabWriter slabs = new SlabWriter(1 << 20, Runnable::run);
        InPlaceLayout.SplitTarget target = splitTarget();
        SlabWriter.ExpertSlab slab = slabs.stageExpert(GROUPED.name(), target, 0);
        slab.put(0, expertSlab(0), target.slabBytes());

        slabs.close();
        slabs.addExpert(slab);

        assertThat(slabs.drainWritten()).isEmpty();
        assertThatThrownBy(() -> slabs.stageExpert(GROUPED.name(), target, 1)).isInstanceOf(IllegalStateException.class);
        assertThat(out.size()).as("nothing written").isZero();
    }
}
