package io.moeflux.serve;

import static io.moeflux.serve.TestServers.VECTORS;
import static io.moeflux.serve.TestServers.chunked;
import static io.moeflux.serve.TestServers.options;
import static io.moeflux.serve.TestServers.put;
import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.connect.safetensors.Manifests;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Uploads of LoRA adapters convert as files do, bit for bit with the reference. */
class LoraUploadTest {
    static final Path LORA_HF = VECTORS.resolve("hy3-lora-hf/hf");

    @TempDir
    Path sinkDir;

    @Test
    void fromHfUploadOfAnAdapterWithPerExpertAndParamWrapperLayersMatchesTheReference() throws Exception {
        byte[] config = Files.readAllBytes(LORA_HF.resolve("config.json"));
        try (IngestServer server = IngestServer.start(options(Direction.FROM_HF, sinkDir).withConfigJson(config))) {
            HttpResponse<String> r = put(server, "/v1/checkpoints/lora", chunked(
                    LORA_HF.resolve("model-00001-of-00002.safetensors"), LORA_HF.resolve("model-00002-of-00002.safetensors")));

            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            assertThat(Manifests.of(sinkDir.resolve("lora"))).isEqualTo(Manifests.of(VECTORS.resolve("hy3-lora-hf/native")));
        }
    }

    @Test
    void singleBlobFromHfUploadComparesTheSharedAAndGivesBackTheNativeAdapter() throws Exception {
        // The reference's to-hf output of hy3-lora-native, uploaded as one blob: from-hf must give its input back.
        Path hf = VECTORS.resolve("hy3-lora-native/hf");
        byte[] config = Files.readAllBytes(hf.resolve("config.json"));
        try (IngestServer server = IngestServer.start(options(Direction.FROM_HF, sinkDir).withConfigJson(config))) {
            HttpResponse<String> r = put(server, "/v1/checkpoints/lora?single_blob=true", chunked(hf.resolve("model.safetensors")));

            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            assertThat(Manifests.of(sinkDir.resolve("lora"))).isEqualTo(Manifests.of(VECTORS.resolve("hy3-lora-native/native")));
        }
    }

    @Test
    void singleBlobToHfUploadOfAnAdapterMatchesTheReference() throws Exception {
        try (IngestServer server = IngestServer.start(options(Direction.TO_HF, sinkDir))) {
            HttpResponse<String> r = put(server, "/v1/checkpoints/lora?single_blob=true&num_hidden_layers=3&num_experts=6"
                    + "&moe_intermediate_size=8", chunked(VECTORS.resolve("hy3-lora-native/native/model.safetensors")));

            assertThat(r.statusCode()).as(r.body()).isEqualTo(200);
            assertThat(Manifests.of(sinkDir.resolve("lora"))).isEqualTo(Manifests.of(VECTORS.resolve("hy3-lora-native/hf")));
        }
    }
}
