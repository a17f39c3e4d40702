package io.moeflux.serve;

import static io.moeflux.serve.TestServers.chunked;
import static io.moeflux.serve.TestServers.options;
import static io.moeflux.serve.TestServers.put;
import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.connect.safetensors.Manifests;
import io.moeflux.connect.safetensors.SafetensorsFormat;
import io.moeflux.connect.safetensors.SafetensorsSource;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.testing.TensorBytes;
import java.io.OutputStream;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Single-blob uploads write expert tensors in place as they arrive: from-hf each expert's slab of a merged
 * tensor once its weights are in, to-hf each expert's weights once its slab of the grouped tensor is in.
 * Whatever the order of the weights in the blob and however little staging memory, the result is the
 * reference's.
 */
class InPlaceMergeUploadTest {
    @TempDir
    Path dir;

    /**
     * The hy3-tiny hf checkpoint as one blob whose data puts every up_proj first and every gate_proj
     * last, so each gate_and_up slab waits for its gate until the very end.
     */
    private Path upsFirstGatesLast() throws Exception {
        List<TensorEvent> tensors = SafetensorsSource.open(ReferenceUploadTest.HF_IN).tensors().collectList().block();
        tensors.sort(Comparator.comparingInt((TensorEvent e) -> e.fqn().contains("up_proj") ? 0 : e.fqn().contains("gate_proj") ? 2 : 1)
                .thenComparing(TensorEvent::fqn));
        Path blob = dir.resolve("ups-first.safetensors");
        try (OutputStream out = Files.newOutputStream(blob)) {
            out.write(SafetensorsFormat.encodeHeader(tensors.stream().map(e -> e.tensor().info(e.fqn())).toList()));
            for (TensorEvent e : tensors) {
                out.write(TensorBytes.of(e.tensor()));
                e.release();
            }
        }
        return blob;
    }

    /** 0: every weight spooled; 1024: one hy3-tiny weight staged at a time, the rest spooled; 64 MiB: the default. */
    @ParameterizedTest(name = "staging {0} bytes")
    @ValueSource(longs = {0, 1024, IngestOptions.DEFAULT_SLAB_STAGING_BYTES})
    void weightsInAnyOrderWithAnyStagingMemoryMatchTheReference(long stagingBytes) throws Exception {
        Path blob = upsFirstGatesLast();
        byte[] config = Files.readAllBytes(ReferenceUploadTest.HF_IN.resolve("config.json"));
        IngestOptions options = options(Direction.FROM_HF, dir.resolve("sink")).withConfigJson(config)
                .withSlabStagingBytes(stagingBytes);
        try (IngestServer server = IngestServer.start(options)) {
            HttpResponse<String> r = put(server, "/v1/checkpoints/shuffled?single_blob=true", chunked(blob));

            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            assertThat(Manifests.of(dir.resolve("sink/shuffled"))).isEqualTo(Manifests.of(ReferenceUploadTest.HF_FROM_HF));
            assertThat(TestServers.spoolInUse(dir.resolve("sink"))).isEmpty();
        }
    }

    /**
     * hy3-tiny-native's grouped tensors have 2048-byte gate_and_up slabs and 1024-byte down slabs. 0: both
     * spooled and split from the spool; 1024: down split in place, gate_and_up spooled; 2048: one slab
     * staged at a time, so the receiver waits for each write; 64 MiB: the default.
     */
    @ParameterizedTest(name = "staging {0} bytes")
    @ValueSource(longs = {0, 1024, 2048, IngestOptions.DEFAULT_SLAB_STAGING_BYTES})
    void toHfSplitsGroupedTensorsWithAnyStagingMemoryAndMatchesTheReference(long stagingBytes) throws Exception {
        IngestOptions options = options(Direction.TO_HF, dir.resolve("sink")).withSlabStagingBytes(stagingBytes);
        try (IngestServer server = IngestServer.start(options)) {
            HttpResponse<String> r = put(server, "/v1/checkpoints/split?single_blob=true&" + ReferenceUploadTest.MODEL_QUERY
                    + ReferenceUploadTest.excludeQuery(), chunked(ReferenceUploadTest.NATIVE_IN));

            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            assertThat(Manifests.of(dir.resolve("sink/split"))).isEqualTo(Manifests.of(ReferenceUploadTest.NATIVE_TO_HF));
            assertThat(TestServers.spoolInUse(dir.resolve("sink"))).isEmpty();
        }
    }
}
