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
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

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
        return blob("ups-first.safetensors", Comparator.comparingInt((TensorEvent e) -> e.fqn().contains("up_proj") ? 0
                : e.fqn().contains("gate_proj") ? 2 : 1).thenComparing(TensorEvent::fqn));
    }

    /** The hy3-tiny hf checkpoint as one blob in name order: each expert's weights side by side. */
    private Path oneBlob() throws Exception {
        return blob("in-order.safetensors", Comparator.comparing(TensorEvent::fqn));
    }

    private Path blob(String name, Comparator<TensorEvent> order) throws Exception {
        List<TensorEvent> tensors = SafetensorsSource.open(ReferenceUploadTest.HF_IN).tensors().collectList().block();
        tensors.sort(order);
        Path blob = dir.resolve(name);
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

    /**
     * Expert weights wait for their slab in staging memory: 0 spools them all; 1024 bytes holds one hy3-tiny
     * weight, so with every up sent before every gate the ups that find it taken are spooled (waiting for it
     * could never end); 2048 holds one slab's two, so in file order the upload waits for each slab's write;
     * 64 MiB, the default, holds them all.
     */
    @ParameterizedTest(name = "staging {0} bytes, ups first {1}")
    @CsvSource({"0, true", "1024, true", "2048, false", "2048, true", "67108864, true"})
    void fromHfSpoolsOnlyWhatDoesNotFitItsStagingMemoryWhateverTheOrderAndMatchesTheReference(long stagingBytes,
            boolean upsFirst) throws Exception {
        Path blob = upsFirst ? upsFirstGatesLast() : oneBlob();
        byte[] config = Files.readAllBytes(ReferenceUploadTest.HF_IN.resolve("config.json"));
        IngestOptions options = options(Direction.FROM_HF, dir.resolve("sink")).withConfigJson(config)
                .withSlabStagingBytes(stagingBytes);
        try (IngestServer server = IngestServer.start(options)) {
            HttpResponse<String> r = put(server, "/v1/checkpoints/shuffled?single_blob=true", chunked(blob));

            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            assertThat(Manifests.of(dir.resolve("sink/shuffled"))).isEqualTo(Manifests.of(ReferenceUploadTest.HF_FROM_HF));
            long experts = bytesOf(blob, name -> name.matches(".*\\.mlp\\.experts\\.\\d+\\..*") && !name.startsWith("model.layers.3."));
            assertThat(experts).isPositive();
            // MTP layers and scale_inv keys are dropped, so they never reach the output: they are spooled.
            long dropped = bytesOf(blob, name -> name.startsWith("model.layers.3.") || name.endsWith("_scale_inv"));
            long spooled = bytesSpooled(r);
            if (stagingBytes == 0) {
                assertThat(spooled).isEqualTo(experts + dropped);
            } else if (stagingBytes >= experts) {
                assertThat(spooled).isEqualTo(dropped);
            } else if (upsFirst) {
                assertThat(spooled).isGreaterThan(dropped).isLessThan(experts + dropped);
            } else {
                assertThat(spooled).as("every slab waited for, none spooled").isEqualTo(dropped);
            }
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
