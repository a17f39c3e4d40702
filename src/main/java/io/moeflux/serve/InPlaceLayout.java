package io.moeflux.serve;

import io.moeflux.connect.safetensors.PlaceableSink;
import io.moeflux.connect.safetensors.Placement;
import io.moeflux.connect.safetensors.PlannedCheckpoint;
import io.moeflux.hy3.ConversionLayout;
import io.moeflux.hy3.MergedPart;
import io.moeflux.hy3.SplitPart;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.ColumnBlockedTensor;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.DenseTensor;
import io.moeflux.tensor.FileRegion;
import io.moeflux.tensor.TensorInfo;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;

/**
 * A single-blob upload's output, opened from the blob's header before any tensor byte arrives, and
 * where each uploaded tensor's bytes go in it.
 *
 * <p>Tensors the conversion passes on untouched are written straight to their place. Expert weights
 * that from-hf merges are transposed into their expert's slab of the merged tensor as soon as the
 * expert's weights are in ({@link SlabWriter}); the conversion's merge then yields a tensor made of
 * placeholders, which {@link #substitute} swaps for the region already written, so the sink finds it
 * in place as well. A grouped expert tensor that to-hf splits is cut the same way, expert slab by expert
 * slab as it arrives, and the per-expert weights the conversion's split names are swapped likewise.
 */
final class InPlaceLayout implements BlobSpool.Placements {
    private final PlannedCheckpoint checkpoint;
    private final Map<String, Placement> passThrough = new HashMap<>();
    private final Map<String, SlabTarget> slabParts = new HashMap<>();
    private final Map<String, SplitTarget> splitTargets = new HashMap<>();
    /** Output tensors written in place before the conversion names them: merged ones, and split weights. */
    private final Map<String, Placement> writtenInPlace = new HashMap<>();

    private InPlaceLayout(PlannedCheckpoint checkpoint) {
        this.checkpoint = checkpoint;
    }

    /**
     * Creates the checkpoint's files laid out for what the conversion makes of {@code uploaded}. Fails
     * as planning would (missing experts and so on).
     *
     * @param stagingBytes memory the upload may stage expert slabs in: a grouped tensor whose expert
     *                     slab does not fit is spooled and split from the spool instead
     */
    static InPlaceLayout open(PlaceableSink sink, UploadConfig config, List<TensorInfo> uploaded, long stagingBytes) {
        ConversionLayout conversion = config.layout(uploaded);
        PlannedCheckpoint checkpoint;
        try {
            checkpoint = sink.open(config.descriptor().withTensors(conversion.planned()));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create the checkpoint's files: " + e.getMessage(), e);
        }
        InPlaceLayout layout = new InPlaceLayout(checkpoint);
        conversion.passThrough().forEach((uploadedName, outputName) ->
                checkpoint.placement(outputName).ifPresent(p -> layout.passThrough.put(uploadedName, p)));
        conversion.mergedParts().forEach((uploadedName, part) -> checkpoint.placement(part.merged().name()).ifPresent(p -> {
            layout.slabParts.put(uploadedName, new SlabTarget(part, p));
            layout.writtenInPlace.put(part.merged().name(), p);
        }));
        Map<String, TensorInfo> uploadedByName = new HashMap<>();
        uploaded.forEach(info -> uploadedByName.put(info.name(), info));
        conversion.splitParts().forEach((uploadedName, parts) -> {
            TensorInfo grouped = uploadedByName.get(uploadedName);
            List<SplitSlice> slices = parts.stream()
                    .map(part -> checkpoint.placement(part.split().name()).map(p -> new SplitSlice(part, p)).orElse(null))
                    .toList();
            if (grouped.dim(0) == 0 || slices.stream().anyMatch(Objects::isNull)) {
                return;
            }
            SplitTarget target = SplitTarget.of(grouped, slices);
            if (target.slabBytes() == 0 || target.slabBytes() > stagingBytes) {
                return;
            }
            layout.splitTargets.put(uploadedName, target);
            slices.forEach(slice -> layout.writtenInPlace.put(slice.part().split().name(), slice.placement()));
        });
        return layout;
    }

    PlannedCheckpoint checkpoint() {
        return checkpoint;
    }

    @Override
    public Optional<Placement> of(String uploadedName) {
        return Optional.ofNullable(passThrough.get(uploadedName));
    }

    @Override
    public Optional<SlabTarget> slab(String uploadedName) {
        return Optional.ofNullable(slabParts.get(uploadedName));
    }

    @Override
    public Optional<SplitTarget> split(String uploadedName) {
        return Optional.ofNullable(splitTargets.get(uploadedName));
    }

    /**
     * A merged tensor whose slabs were all written in place, or a split weight written in place, comes
     * out of the conversion made of placeholders: it is swapped for its region of the output. Every other
     * event passes unchanged.
     */
    TensorEvent substitute(TensorEvent event) {
        Placement p = writtenInPlace.get(event.fqn());
        if (p == null) {
            return event;
        }
        TensorInfo info = event.tensor().info(event.fqn());
        event.release();
        try {
            return new TensorEvent(info.name(), regionTensor(info.dtype(), info.shape(), p));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot map " + info.name() + " in the output: " + e.getMessage(), e);
        }
    }

    /**
     * A tensor written straight into its place in the output, as that region of the output file, so the
     * sink finds it in place. Mapped on its own: its neighbours in the output may not be written yet.
     */
    static DenseTensor regionTensor(DType dtype, long[] shape, Placement p) throws IOException {
        if (p.byteSize() == 0) {
            return new DenseTensor(dtype, shape, MemorySegment.ofArray(new byte[0]), () -> {},
                    new FileRegion(p.channel(), p.offset(), 0));
        }
        Arena arena = Arena.ofShared();
        try {
            MemorySegment bytes = p.channel().map(FileChannel.MapMode.READ_ONLY, p.offset(), p.byteSize(), arena);
            return new DenseTensor(dtype, shape, bytes, arena::close, new FileRegion(p.channel(), p.offset(), p.byteSize()));
        } catch (IOException | RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    /** Where an expert weight goes: its part of a merged tensor, and that tensor's place in the output. */
    record SlabTarget(MergedPart part, Placement merged) {}

    /**
     * A grouped expert tensor that to-hf splits, and where each per-expert weight cut from it goes.
     *
     * @param grouped   the uploaded tensor, {@code [experts, rows, cols]}
     * @param byExpert  per expert slab, its weights with their places, in the split's order
     * @param blockCols the column blocks an expert's slab is staged in: every weight's columns start and
     *                  end at a block, so each of its output tiles reads one block
     */
    record SplitTarget(TensorInfo grouped, List<List<SplitSlice>> byExpert, int blockCols) {
        /** Worked out once per grouped tensor: the receiver stages its slabs expert by expert. */
        static SplitTarget of(TensorInfo grouped, List<SplitSlice> slices) {
            List<List<SplitSlice>> byExpert = new ArrayList<>();
            for (int e = 0; e < grouped.dim(0); e++) {
                byExpert.add(new ArrayList<>());
            }
            long unit = grouped.dim(2);
            for (SplitSlice s : slices) {
                byExpert.get(s.part().expert()).add(s);
                unit = gcd(unit, s.part().colStart());
                unit = gcd(unit, s.part().colStart() + s.part().colCount());
            }
            int blockCols = ColumnBlockedTensor.blockColsFor(grouped.dtype(), Math.toIntExact(grouped.dim(1)), Math.toIntExact(unit));
            return new SplitTarget(grouped, byExpert.stream().map(List::copyOf).toList(), blockCols);
        }

        int experts() {
            return byExpert.size();
        }

        long slabBytes() {
            return grouped.byteSize() / grouped.dim(0);
        }

        private static long gcd(long a, long b) {
            return b == 0 ? a : gcd(b, a % b);
        }
    }

    /** One per-expert weight of a split, and its place in the output. */
    record SplitSlice(SplitPart part, Placement placement) {}
}
