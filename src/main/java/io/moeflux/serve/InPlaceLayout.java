package io.moeflux.serve;

import io.moeflux.connect.safetensors.PlaceableSink;
import io.moeflux.connect.safetensors.Placement;
import io.moeflux.connect.safetensors.PlannedCheckpoint;
import io.moeflux.hy3.ConversionLayout;
import io.moeflux.hy3.MergedPart;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.DenseTensor;
import io.moeflux.tensor.FileRegion;
import io.moeflux.tensor.TensorInfo;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * A single-blob upload's output, opened from the blob's header before any tensor byte arrives, and
 * where each uploaded tensor's bytes go in it.
 *
 * <p>Tensors the conversion passes on untouched are written straight to their place. Expert weights
 * that from-hf merges are transposed into their expert's slab of the merged tensor as soon as the
 * expert's weights are in ({@link SlabWriter}); the conversion's merge then yields a tensor made of
 * placeholders, which {@link #substitute} swaps for the region already written, so the sink finds it
 * in place as well.
 */
final class InPlaceLayout implements BlobSpool.Placements {
    private final PlannedCheckpoint checkpoint;
    private final Map<String, Placement> passThrough = new HashMap<>();
    private final Map<String, SlabTarget> slabParts = new HashMap<>();
    private final Map<String, Placement> mergedInPlace = new HashMap<>();

    private InPlaceLayout(PlannedCheckpoint checkpoint) {
        this.checkpoint = checkpoint;
    }

    /**
     * Creates the checkpoint's files laid out for what the conversion makes of {@code uploaded}. Fails
     * as planning would (missing experts and so on).
     */
    static InPlaceLayout open(PlaceableSink sink, UploadConfig config, List<TensorInfo> uploaded) {
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
            layout.mergedInPlace.put(part.merged().name(), p);
        }));
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

    /**
     * A merged tensor whose slabs were all written in place comes out of the conversion made of
     * placeholders: it is swapped for its region of the output. Every other event passes unchanged.
     */
    TensorEvent substitute(TensorEvent event) {
        Placement p = mergedInPlace.get(event.fqn());
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
}
