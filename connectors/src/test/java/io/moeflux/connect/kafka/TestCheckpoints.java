package io.moeflux.connect.kafka;

import io.moeflux.connect.safetensors.Manifests;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.TensorInfo;
import io.moeflux.tensor.Tensors;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import reactor.core.publisher.Flux;

/** Checkpoints for the Kafka tests: the reference vectors and seeded random ones. */
final class TestCheckpoints {
    static final Path VECTORS = Path.of("../pipeline/src/test/resources/reference-vectors");

    private TestCheckpoints() {}

    /** {@code count} BF16 tensors of {@code bytesEach} bytes spread over {@code layers} layers, deterministic per seed. */
    static List<TensorInfo> syntheticInfos(int count, int bytesEach, int layers) {
        List<TensorInfo> infos = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            infos.add(new TensorInfo("model.layers." + (i % layers) + ".t" + i + ".weight", DType.BF16,
                    new long[] {bytesEach / 2}));
        }
        return infos;
    }

    /** Fresh tensors for {@code infos}, filled from {@code seed} (the same bytes every time). */
    static Flux<TensorEvent> synthetic(List<TensorInfo> infos, long seed) {
        return Flux.fromIterable(infos).index().map(t -> {
            TensorInfo info = t.getT2();
            byte[] bytes = new byte[(int) info.byteSize()];
            new Random(seed * 1_000_003 + t.getT1()).nextBytes(bytes);
            return new TensorEvent(info.name(), Tensors.of(info.dtype(), info.shape(), bytes));
        });
    }

    /** Name to dtype, shape and SHA-256 of every tensor of a stream, releasing them; a tensor seen twice fails. */
    static Map<String, String> digest(Flux<TensorEvent> events) {
        Map<String, String> out = new TreeMap<>();
        events.doOnNext(e -> {
            try {
                if (out.put(e.fqn(), Manifests.describe(e)) != null) {
                    throw new AssertionError("tensor " + e.fqn() + " arrived twice");
                }
            } finally {
                e.release();
            }
        }).blockLast();
        return out;
    }

    static Map<String, String> digest(CheckpointSource source) {
        return digest(source.tensors());
    }

    static Map<String, String> digest(Path folder) throws java.io.IOException {
        return Manifests.of(folder);
    }
}
