package io.moeflux.connect.safetensors;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.connect.safetensors.ShardedSaves.Cut;
import io.moeflux.connect.safetensors.ShardedSaves.Layout;
import io.moeflux.hy3.Hy3Adapter;
import io.moeflux.hy3.Hy3Options;
import io.moeflux.hy3.MergedOutput;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.Box;
import io.moeflux.tensor.TensorInfo;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Function;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/** Sharded saves (DCP) read as one checkpoint of pieces: consolidated, converted, and refused when torn. */
class ShardedSaveTest {
    static final Path VECTORS = ReferenceVectorsTest.VECTORS;
    static final Path REFERENCE_SAVE = VECTORS.resolve("hy3-tiny-dcp/sharded");

    @TempDir
    Path tmp;

    private Path copy(Path in) throws Exception {
        CheckpointSource source = SafetensorsSource.open(in);
        Path out = tmp.resolve("copy-" + in.getFileName());
        SafetensorsSink.create(SafetensorsSinkOptions.to(out)).write(source.describe().block(), source.tensors()).block();
        return out;
    }

    private Path fromHf(Path in, Hy3Options options) throws Exception {
        CheckpointSource source = SafetensorsSource.open(in);
        CheckpointDescriptor d = source.describe().block();
        Hy3Adapter adapter = new Hy3Adapter(ModelConfigJson.read(in), options);
        Path out = tmp.resolve("native-" + in.getFileName() + "-" + options.epRank());
        SafetensorsSink.create(SafetensorsSinkOptions.to(out))
                .write(d.withTensors(adapter.planFromHf(d.tensors().orElseThrow())),
                        adapter.fromHf(source.tensors(), MergedOutput.SLAB_PIECES))
                .block();
        return out;
    }

    @Test
    void theReferenceSaveOfFourRanksConsolidatesToHy3TinyBitForBitWithItsConfig() throws Exception {
        Path out = copy(REFERENCE_SAVE);
        assertThat(Manifests.of(out)).isEqualTo(Manifests.of(VECTORS.resolve("hy3-tiny/hf")));
        assertThat(out.resolve("config.json")).hasSameBinaryContentAs(REFERENCE_SAVE.resolve(".hf_metadata/config.json"));
    }

    @Test
    void theReferenceSaveDescribesItsWholeTensorsAndComesInPieces() throws Exception {
        CheckpointSource source = SafetensorsSource.open(REFERENCE_SAVE);
        List<TensorInfo> whole = SafetensorsSource.open(VECTORS.resolve("hy3-tiny/hf")).describe().block().tensors().orElseThrow();
        assertThat(source.describe().block().tensors().orElseThrow()).containsExactlyInAnyOrderElementsOf(whole);
        List<TensorEvent> events = source.tensors().collectList().block();
        assertThat(events).anyMatch(e -> !e.isWhole());
        events.forEach(TensorEvent::release);
    }

    @Test
    void fromHfOfTheReferenceSaveGivesHy3TinyNative() throws Exception {
        assertThat(Manifests.of(fromHf(REFERENCE_SAVE, Hy3Options.DEFAULTS))).isEqualTo(Manifests.of(VECTORS.resolve("hy3-tiny/native")));
    }

    @Test
    void anExpertParallelRankOfTheSaveConvertsAsThatRankOfTheWholeCheckpoint() throws Exception {
        Hy3Options rank1 = Hy3Options.DEFAULTS.withExpertParallel(2, 1);
        assertThat(Manifests.of(fromHf(REFERENCE_SAVE, rank1))).isEqualTo(Manifests.of(fromHf(VECTORS.resolve("hy3-tiny/hf"), rank1)));
    }

    /** hy3-tiny/hf's tensors by name, whole. */
    private static Map<String, TensorEvent> tensorsOf(Path checkpoint) throws Exception {
        Map<String, TensorEvent> byName = new LinkedHashMap<>();
        SafetensorsSource.open(checkpoint).tensors().toIterable().forEach(e -> byName.put(e.fqn(), e));
        return byName;
    }

    /**
     * Eight ranks: 2-D tensors in row pieces of seven ranks, and an empty piece from the eighth (a trailing
     * FSDP rank: size 0, offset at the end of the rows), expert weights split by columns between two ranks,
     * lm_head in a 2 x 2 grid, 1-D tensors replicated and stored once.
     */
    private static List<Cut> eightRanks(Map<String, TensorEvent> tensors) {
        List<Cut> cuts = new ArrayList<>();
        tensors.forEach((name, e) -> {
            long[] shape = e.wholeShape();
            if (name.equals("lm_head.weight")) {
                for (int i = 0; i < 4; i++) {
                    long r = shape[0] / 2;
                    long c = shape[1] / 2;
                    cuts.add(new Cut(name, i, new Box(new long[] {(i / 2) * r, (i % 2) * c},
                            new long[] {i / 2 == 0 ? r : shape[0] - r, i % 2 == 0 ? c : shape[1] - c})));
                }
            } else if (name.contains(".mlp.experts.")) {
                cuts.addAll(ShardedSaves.rows(name, shape, 1, 2).stream().map(c -> new Cut(name, c.rank() + 4, c.box())).toList());
            } else if (shape.length >= 2) {
                cuts.addAll(ShardedSaves.rows(name, shape, 0, 7));
                long[] none = shape.clone();
                none[0] = 0;
                long[] atEnd = new long[shape.length];
                atEnd[0] = shape[0];
                cuts.add(new Cut(name, 7, new Box(atEnd, none)));
            } else {
                cuts.add(new Cut(name, 0, Box.whole(shape)));
            }
        });
        return cuts;
    }

    @ParameterizedTest
    @EnumSource(Layout.class)
    void eightRanksWithEmptyPiecesInEitherHeaderLayoutConsolidateAndConvert(Layout layout) throws Exception {
        Path hf = VECTORS.resolve("hy3-tiny/hf");
        Map<String, TensorEvent> tensors = tensorsOf(hf);
        Path save = tmp.resolve("eight-" + layout);
        List<Cut> cuts = eightRanks(tensors);
        assertThat(cuts).anyMatch(c -> c.box().isEmpty());
        ShardedSaves.write(save, tensors, cuts, layout);
        Files.createDirectories(save.resolve(".hf_metadata"));
        Files.copy(hf.resolve("config.json"), save.resolve(".hf_metadata/config.json"));
        tensors.values().forEach(TensorEvent::release);

        assertThat(Manifests.of(copy(save))).isEqualTo(Manifests.of(hf));
        assertThat(Manifests.of(fromHf(save, Hy3Options.DEFAULTS))).isEqualTo(Manifests.of(VECTORS.resolve("hy3-tiny/native")));
    }

    @Test
    void threeDimensionalBoxesOfGroupedTensorsConvertToHf() throws Exception {
        Path nativeIn = VECTORS.resolve("hy3-tiny-native/native");
        Map<String, TensorEvent> tensors = tensorsOf(nativeIn);
        List<Cut> cuts = new ArrayList<>();
        tensors.forEach((name, e) -> {
            long[] s = e.wholeShape();
            if (name.endsWith("_projs")) {
                cuts.addAll(ShardedSaves.groupedBoxes(name, s));
            } else {
                cuts.add(new Cut(name, 0, Box.whole(s)));
            }
        });
        Path save = tmp.resolve("grouped");
        ShardedSaves.write(save, tensors, cuts, Layout.TORCH);
        Files.copy(nativeIn.resolve("config.json"), save.resolve("config.json"));
        tensors.values().forEach(TensorEvent::release);

        CheckpointSource source = SafetensorsSource.open(save);
        CheckpointDescriptor d = source.describe().block();
        Hy3Adapter adapter = new Hy3Adapter(ModelConfigJson.read(save), Hy3Options.DEFAULTS.withExcludeKeyRegex("^custom\\.exclude"));
        Path out = tmp.resolve("hf");
        SafetensorsSink.create(SafetensorsSinkOptions.to(out))
                .write(d.withTensors(adapter.planToHf(d.tensors().orElseThrow())), adapter.toHf(source.tensors())).block();
        assertThat(Manifests.of(out)).isEqualTo(Manifests.of(VECTORS.resolve("hy3-tiny-native/hf")));
    }

    /** The reference save with its cuts changed by {@code change}; the message of the refusal to open it. */
    private String tornSave(Function<List<Cut>, List<Cut>> change) throws Exception {
        Path hf = VECTORS.resolve("hy3-tiny/hf");
        Map<String, TensorEvent> tensors = tensorsOf(hf);
        Path save = tmp.resolve("torn");
        ShardedSaves.write(save, tensors, change.apply(eightRanks(tensors)), Layout.AUTOMODEL);
        tensors.values().forEach(TensorEvent::release);
        Throwable refused = org.assertj.core.api.Assertions.catchThrowable(() -> SafetensorsSource.open(save));
        assertThat(refused).isInstanceOf(InvalidCheckpointException.class);
        return refused.getMessage();
    }

    @Test
    void aMissingPieceIsRefusedNamingTheTensorAndTheRegion() throws Exception {
        String message = tornSave(cuts -> cuts.stream()
                .filter(c -> !(c.tensor().equals("lm_head.weight") && c.rank() == 3)).toList());
        assertThat(message).isEqualTo("tensor lm_head.weight: region [32:64, 16:32] of [64, 32] is in no shard file (3 pieces are)");
    }

    @Test
    void anOverlapIsRefusedNamingTheTensorTheRegionAndBothFiles() throws Exception {
        String message = tornSave(cuts -> {
            List<Cut> more = new ArrayList<>(cuts);
            more.add(new Cut("model.norm.weight", 5, new Box(new long[] {4}, new long[] {8})));
            return more;
        });
        assertThat(message).startsWith("tensor model.norm.weight: region [4:12] is saved twice, in ")
                .contains("shard-00001-model-00001-of-00001.safetensors").contains("shard-00006-model-00001-of-00001.safetensors");
    }

    @Test
    void piecesOfOneTensorInTwoTypesAreRefused() throws Exception {
        Path hf = VECTORS.resolve("hy3-tiny/hf");
        Map<String, TensorEvent> tensors = tensorsOf(hf);
        Path save = tmp.resolve("types");
        List<Cut> cuts = eightRanks(tensors);
        ShardedSaves.write(save, tensors, cuts.stream().filter(c -> c.rank() != 1).toList(), Layout.AUTOMODEL);
        // Rank 1's file holds its pieces in another type of the same size.
        Map<String, TensorEvent> recast = new LinkedHashMap<>();
        tensors.forEach((name, e) -> recast.put(name, new TensorEvent(name, io.moeflux.tensor.Tensors.of(
                e.tensor().dtype() == io.moeflux.tensor.DType.BF16 ? io.moeflux.tensor.DType.F16 : e.tensor().dtype(),
                e.wholeShape(), io.moeflux.testing.TensorBytes.of(e.tensor())))));
        ShardedSaves.write(save, recast, cuts.stream().filter(c -> c.rank() == 1).toList(), Layout.AUTOMODEL);
        tensors.values().forEach(TensorEvent::release);
        recast.values().forEach(TensorEvent::release);
        assertThatThrownBy(() -> SafetensorsSource.open(save)).isInstanceOf(InvalidCheckpointException.class)
                .hasMessageContaining("is BF16 in").hasMessageContaining("but F16 in")
                .hasMessageContaining("pieces of one tensor must have one type");
    }

    @Test
    void aPlainSafetensorsFileAmongTheShardsIsRefusedByName() throws Exception {
        Path save = tmp.resolve("mixed");
        Files.createDirectories(save);
        try (var files = Files.list(REFERENCE_SAVE)) {
            for (Path f : files.filter(Files::isRegularFile).toList()) {
                Files.copy(f, save.resolve(f.getFileName()));
            }
        }
        Files.copy(VECTORS.resolve("hy3-tiny/hf/model-00001-of-00003.safetensors"), save.resolve("shard-00005-model-00001-of-00001.safetensors"));
        assertThatThrownBy(() -> SafetensorsSource.open(save)).isInstanceOf(InvalidCheckpointException.class)
                .hasMessage(save.resolve("shard-00005-model-00001-of-00001.safetensors")
                        + ": a safetensors file without DCP_SHARDING_INFO among the files of a sharded save");
    }
}
