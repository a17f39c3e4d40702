package io.moeflux.serve;

import static io.moeflux.serve.TestServers.chunked;
import static io.moeflux.serve.TestServers.options;
import static io.moeflux.serve.TestServers.put;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.ObjectMapper;
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
import java.util.function.Predicate;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.api.Test;

/**
 * Single-blob uploads convert as their bytes arrive: what passes through unchanged streams from the socket
 * into its place in the output and never touches the spool; from-hf's expert weights are spooled and
 * transposed into their expert's slab once the expert's weights are in; to-hf's grouped tensors are spooled
 * and split expert by expert. Whatever the order of the weights in the blob, the result is the
 * reference's, and the status says how many bytes went through the spool.
 */
class InPlaceUploadTest {
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

    /** Bytes of the tensors in the checkpoint file whose names {@code spooled} accepts. */
    private static long bytesOf(Path file, Predicate<String> spooled) throws Exception {
        long sum = 0;
        for (TensorEvent e : SafetensorsSource.open(file).tensors().collectList().block()) {
            if (spooled.test(e.fqn())) {
                sum += e.tensor().byteSize();
            }
            e.release();
        }
        return sum;
    }

    private static long bytesSpooled(HttpResponse<String> r) throws Exception {
        return new ObjectMapper().readTree(r.body()).get("bytes_spooled").asLong();
    }

    @Test
    void fromHfSpoolsOnlyTheExpertWeightsWhateverTheirOrderAndMatchesTheReference() throws Exception {
        Path blob = upsFirstGatesLast();
        byte[] config = Files.readAllBytes(ReferenceUploadTest.HF_IN.resolve("config.json"));
        IngestOptions options = options(Direction.FROM_HF, dir.resolve("sink")).withConfigJson(config);
        try (IngestServer server = IngestServer.start(options)) {
            HttpResponse<String> r = put(server, "/v1/checkpoints/shuffled?single_blob=true", chunked(blob));

            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            assertThat(Manifests.of(dir.resolve("sink/shuffled"))).isEqualTo(Manifests.of(ReferenceUploadTest.HF_FROM_HF));
            long experts = bytesOf(blob, name -> name.matches(".*\\.mlp\\.experts\\.\\d+\\..*"));
            assertThat(experts).isPositive();
            // MTP layers and scale_inv keys are dropped, so they never reach the output either way; they are spooled too.
            long dropped = bytesOf(blob, name -> !name.matches(".*\\.mlp\\.experts\\.\\d+\\..*")
                    && (name.startsWith("model.layers.3.") || name.endsWith("_scale_inv")));
            assertThat(bytesSpooled(r)).isEqualTo(experts + dropped);
            assertThat(TestServers.spoolInUse(dir.resolve("sink"))).isEmpty();
        }
    }

    @Test
    void toHfSpoolsOnlyTheGroupedTensorsAndMatchesTheReference() throws Exception {
        IngestOptions options = options(Direction.TO_HF, dir.resolve("sink"));
        try (IngestServer server = IngestServer.start(options)) {
            HttpResponse<String> r = put(server, "/v1/checkpoints/split?single_blob=true&" + ReferenceUploadTest.MODEL_QUERY
                    + ReferenceUploadTest.excludeQuery(), chunked(ReferenceUploadTest.NATIVE_IN));

            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            assertThat(Manifests.of(dir.resolve("sink/split"))).isEqualTo(Manifests.of(ReferenceUploadTest.NATIVE_TO_HF));
            long grouped = bytesOf(ReferenceUploadTest.NATIVE_IN, name -> name.endsWith("_projs"));
            assertThat(grouped).isPositive();
            // Tensors the exclusion drops never reach the output: they are spooled too.
            long excluded = bytesOf(ReferenceUploadTest.NATIVE_IN, name -> name.startsWith("custom.exclude"));
            assertThat(bytesSpooled(r)).isEqualTo(grouped + excluded);
            assertThat(TestServers.spoolInUse(dir.resolve("sink"))).isEmpty();
        }
    }

    @Test
    void withoutConversionASingleBlobStreamsEveryByteIntoPlaceAndSeveralBlobsAreSpooled() throws Exception {
        IngestOptions options = options(Direction.NONE, dir.resolve("sink"));
        try (IngestServer server = IngestServer.start(options)) {
            HttpResponse<String> single = put(server, "/v1/checkpoints/single?single_blob=true", chunked(ReferenceUploadTest.NATIVE_IN));
            HttpResponse<String> spooled = put(server, "/v1/checkpoints/spooled", chunked(ReferenceUploadTest.NATIVE_IN));

            assertThat(single.statusCode()).as(single.body()).isEqualTo(200);
            assertThat(spooled.statusCode()).as(spooled.body()).isEqualTo(200);
            assertThat(Manifests.of(dir.resolve("sink/single"))).isEqualTo(Manifests.of(ReferenceUploadTest.NATIVE_IN));
            assertThat(Manifests.of(dir.resolve("sink/spooled"))).isEqualTo(Manifests.of(ReferenceUploadTest.NATIVE_IN));
            assertThat(bytesSpooled(single)).isZero();
            assertThat(bytesSpooled(spooled)).isEqualTo(bytesOf(ReferenceUploadTest.NATIVE_IN, name -> true));
        }
    }
}
