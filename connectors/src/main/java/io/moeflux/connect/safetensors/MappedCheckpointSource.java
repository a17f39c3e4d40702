package io.moeflux.connect.safetensors;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DenseTensor;
import io.moeflux.tensor.FileRegion;
import io.moeflux.tensor.RefCounted;
import io.moeflux.tensor.Releasable;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.file.StandardOpenOption;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Emits every tensor of validated shards, or piece of one for a sharded save, as zero-copy slices of the
 * shard's mapping.
 *
 * <p>Each shard is mapped once, with a shared arena (tensors are released on whichever thread the
 * pipeline finishes with them). The mapping is unmapped when the stream is done with the shard and
 * every tensor sliced from it has been released: the source holds one handle for the duration of the
 * shard's stream, each emitted tensor one more.
 */
final class MappedCheckpointSource implements CheckpointSource {
    private final List<SafetensorsSource.Shard> shards;
    private final CheckpointDescriptor descriptor;

    /** The whole shape of every tensor, for the pieces of a sharded save. */
    private final Map<String, long[]> wholeShapes = new HashMap<>();

    MappedCheckpointSource(List<SafetensorsSource.Shard> shards, CheckpointDescriptor descriptor) {
        this.shards = shards;
        this.descriptor = descriptor;
        descriptor.tensors().orElseThrow().forEach(t -> wholeShapes.put(t.name(), t.shape()));
    }

    @Override
    public Mono<CheckpointDescriptor> describe() {
        return Mono.just(descriptor);
    }

    @Override
    public Flux<TensorEvent> tensors() {
        return Stages.releaseOnDiscard(Flux.fromIterable(shards).concatMap(this::shardTensors, 1));
    }

    private record Mapping(FileChannel channel, MemorySegment segment, RefCounted refs, Releasable streamHandle) {}

    private Flux<TensorEvent> shardTensors(SafetensorsSource.Shard shard) {
        return Flux.using(
                () -> map(shard),
                mapping -> Flux.fromIterable(shard.header().entries()).map(e -> {
                    long at = shard.header().dataStart() + e.begin();
                    DenseTensor bytes = new DenseTensor(e.dtype(), e.shape(), mapping.segment().asSlice(at, e.byteSize()),
                            mapping.refs().retain(), new FileRegion(mapping.channel(), at, e.byteSize()));
                    long[] offsets = shard.pieceOffsets().get(e.name());
                    return offsets == null ? new TensorEvent(e.name(), bytes)
                            : TensorEvent.piece(e.name(), wholeShapes.get(e.name()), offsets, bytes);
                }),
                mapping -> mapping.streamHandle().release());
    }

    private static Mapping map(SafetensorsSource.Shard shard) {
        Arena arena = Arena.ofShared();
        FileChannel ch = null;
        try {
            ch = FileChannel.open(shard.file(), StandardOpenOption.READ);
            if (ch.size() != shard.size()) {
                throw new IOException(shard.file() + " changed size while being read (" + shard.size() + " -> " + ch.size() + " bytes)");
            }
            MemorySegment seg = ch.map(FileChannel.MapMode.READ_ONLY, 0, shard.size(), arena);
            // The channel stays open with the mapping: tensors expose it for in-kernel copies.
            FileChannel open = ch;
            RefCounted refs = RefCounted.onLastRelease(() -> {
                arena.close();
                closeQuietly(open);
            });
            return new Mapping(ch, seg, refs, refs.retain());
        } catch (IOException e) {
            arena.close();
            closeQuietly(ch);
            throw new UncheckedIOException(e);
        } catch (RuntimeException e) {
            arena.close();
            closeQuietly(ch);
            throw e;
        }
    }

    private static void closeQuietly(FileChannel ch) {
        if (ch != null) {
            try {
                ch.close();
            } catch (IOException ignored) {
                // Read-only: nothing can be lost by a failed close.
            }
        }
    }
}
