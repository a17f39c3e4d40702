package io.moeflux.serve;

import static io.moeflux.serve.ReferenceUploadTest.HF_FROM_HF;
import static io.moeflux.serve.ReferenceUploadTest.HF_IN;
import static io.moeflux.serve.TestServers.options;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assumptions.assumeThat;

import io.moeflux.connect.safetensors.Manifests;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The standard-library Python client of the README, run as documented: one tensor per blob during a "save". */
class PythonClientTest {
    static final Path DOC = Path.of("../README.md");

    @TempDir
    Path tmp;

    @Test
    void theDocumentedClientStreamsAHy3CheckpointTensorByTensorAndItMatchesTheReference() throws Exception {
        assumeThat(pythonInstalled()).as("python3 is installed").isTrue();
        String doc = Files.readString(DOC);
        int start = doc.indexOf("```python\n", doc.indexOf("## Live ingest (HTTP)")) + "```python\n".length();
        String client = doc.substring(start, doc.indexOf("```", start));
        Files.writeString(tmp.resolve("client.py"), client.substring(0, client.indexOf("if __name__")));
        // A stand-in for a trainer's save loop: every tensor of the three shards, one at a time.
        Files.writeString(tmp.resolve("save.py"), """
                import json, struct, sys
                from client import stream_checkpoint
                def tensors(paths):
                    for path in paths:
                        b = open(path, "rb").read()
                        n = struct.unpack("<Q", b[:8])[0]
                        for name, v in json.loads(b[8:8 + n]).items():
                            if name != "__metadata__":
                                s, e = v["data_offsets"]
                                yield name, v["dtype"], v["shape"], b[8 + n + s:8 + n + e]
                print(json.dumps(stream_checkpoint("127.0.0.1", int(sys.argv[1]), "from-python", tensors(sys.argv[2:]))))
                """);
        byte[] config = Files.readAllBytes(HF_IN.resolve("config.json"));
        try (IngestServer server = IngestServer.start(options(Direction.FROM_HF, tmp.resolve("out")).withConfigJson(config))) {
            Process p = new ProcessBuilder("python3", "save.py", Integer.toString(server.port()),
                    HF_IN.resolve("model-00001-of-00003.safetensors").toAbsolutePath().toString(),
                    HF_IN.resolve("model-00002-of-00003.safetensors").toAbsolutePath().toString(),
                    HF_IN.resolve("model-00003-of-00003.safetensors").toAbsolutePath().toString())
                    .directory(tmp.toFile()).redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);

            assertThat(p.waitFor()).as(out).isZero();
            assertThat(out).contains("\"state\": \"committed\"");
            assertThat(Manifests.of(tmp.resolve("out/from-python"))).isEqualTo(Manifests.of(HF_FROM_HF));
        }
    }

    static boolean pythonInstalled() {
        try {
            return new ProcessBuilder("python3", "--version").redirectErrorStream(true).start().waitFor() == 0;
        } catch (java.io.IOException | InterruptedException e) {
            return false;
        }
    }
}
