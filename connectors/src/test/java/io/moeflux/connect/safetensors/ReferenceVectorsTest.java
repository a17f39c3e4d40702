package io.moeflux.connect.safetensors;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.hy3.Hy3Adapter;
import io.moeflux.hy3.Hy3Config;
import io.moeflux.hy3.Hy3Options;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.CommitSummary;
import java.nio.file.Path;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The reference adapter's own outputs, matched bit for bit through files. */
class ReferenceVectorsTest {
    static final Path VECTORS = Path.of("../pipeline/src/test/resources/reference-vectors");

    @TempDir
    Path tmp;

    @Test
    void fromHfOfHy3TinyMatchesTheReferenceBitForBit() throws Exception {
        Path in = VECTORS.resolve("hy3-tiny/hf");
        CheckpointSource source = SafetensorsSource.open(in);
        CheckpointDescriptor d = source.describe().block();
        Hy3Config config = ModelConfigJson.read(in);
        Hy3Adapter adapter = new Hy3Adapter(config, Hy3Options.DEFAULTS);
        Path out = tmp.resolve("native");
        CommitSummary s = SafetensorsSink.create(SafetensorsSinkOptions.to(out))
                .write(d.withTensors(adapter.planFromHf(d.tensors().orElseThrow())), adapter.fromHf(source.tensors()))
                .block();
        assertThat(Manifests.of(out)).isEqualTo(Manifests.of(VECTORS.resolve("hy3-tiny/native")));
        assertThat(s.tensors()).isEqualTo(Manifests.of(out).size());
        assertThat(out.resolve("config.json")).hasSameBinaryContentAs(in.resolve("config.json"));
    }

    @Test
    void toHfOfHy3TinyNativeWithExclusionMatchesTheReferenceBitForBit() throws Exception {
        Path in = VECTORS.resolve("hy3-tiny-native/native");
        CheckpointSource source = SafetensorsSource.open(in);
        CheckpointDescriptor d = source.describe().block();
        Hy3Adapter adapter = new Hy3Adapter(ModelConfigJson.read(in), Hy3Options.DEFAULTS.withExcludeKeyRegex("^custom\\.exclude"));
        Path out = tmp.resolve("hf");
        SafetensorsSink.create(SafetensorsSinkOptions.to(out))
                .write(d.withTensors(adapter.planToHf(d.tensors().orElseThrow())), adapter.toHf(source.tensors()))
                .block();
        assertThat(Manifests.of(out)).isEqualTo(Manifests.of(VECTORS.resolve("hy3-tiny-native/hf")));
    }

    @Test
    void unplannedSpoolingSinkWritesTheSameBytesAsThePlannedOne() throws Exception {
        Path in = VECTORS.resolve("hy3-tiny/hf");
        Hy3Adapter adapter = new Hy3Adapter(ModelConfigJson.read(in), Hy3Options.DEFAULTS);
        CheckpointSource source = SafetensorsSource.open(in);
        CheckpointDescriptor d = source.describe().block();
        Path planned = tmp.resolve("planned");
        Path spooled = tmp.resolve("spooled");
        SafetensorsSink.create(SafetensorsSinkOptions.to(planned).withMaxShardSize(20_000))
                .write(d.withTensors(adapter.planFromHf(d.tensors().orElseThrow())), adapter.fromHf(source.tensors())).block();
        SafetensorsSink.create(SafetensorsSinkOptions.to(spooled).withMaxShardSize(20_000))
                .write(new CheckpointDescriptor(Optional.empty(), d.configJson()), adapter.fromHf(source.tensors())).block();
        assertThat(planned.resolve(ShardIndex.FILE_NAME)).exists();
        try (var files = java.nio.file.Files.list(planned)) {
            for (Path f : files.toList()) {
                assertThat(spooled.resolve(f.getFileName())).hasSameBinaryContentAs(f);
            }
        }
        assertThat(Manifests.of(spooled)).isEqualTo(Manifests.of(VECTORS.resolve("hy3-tiny/native")));
    }
}
