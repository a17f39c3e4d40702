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
    /** The rank client's folder: this module's Python sources. */
    static final Path CLIENT = Path.of("main/python");

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
                print(json.dumps(stream_checkpoint("127.0.0.1", int(sys.argv[1]), "from-python", tensors(sys.argv[3:]))))
                """);
        try (IngestServer server = fromHfService()) {
            String out = runRanks(server, "save.py");

            assertThat(out).contains("\"state\": \"committed\"");
            assertThat(Manifests.of(tmp.resolve("out/from-python"))).isEqualTo(Manifests.of(HF_FROM_HF));
        }
    }

    /**
     * The rank client in the repository, as a training job would use it: four ranks, each with its FSDP row
     * pieces of every tensor (whole small ones spread between them), upload at once on four threads; one
     * rank's first connection breaks halfway, and the client sends the part again. One checkpoint is
     * declared first with the manifest helper, the other is not; both commit the reference conversion.
     */
    @Test
    void theRankClientUploadsFourRanksAtOnceRetriesABrokenPartAndCommitsTheReference() throws Exception {
        assumeThat(pythonInstalled()).as("python3 is installed").isTrue();
        Files.writeString(tmp.resolve("ranks.py"), """
                import json, struct, sys, threading
                sys.path.insert(0, sys.argv[2])
                import moeflux_parts

                def tensors(paths):
                    for path in paths:
                        b = open(path, "rb").read()
                        n = struct.unpack("<Q", b[:8])[0]
                        for name, v in json.loads(b[8:8 + n]).items():
                            if name != "__metadata__":
                                s, e = v["data_offsets"]
                                yield name, v["dtype"], v["shape"], memoryview(b)[8 + n + s:8 + n + e]

                RANKS = 4
                whole = list(tensors(sys.argv[3:]))
                pieces = [[] for _ in range(RANKS)]
                for i, (name, dtype, shape, data) in enumerate(whole):
                    if len(shape) == 0 or shape[0] < RANKS:
                        pieces[i % RANKS].append(moeflux_parts.Piece(name, data, dtype=dtype, shape=shape))
                        continue
                    row = len(data) // shape[0]
                    for r in range(RANKS):
                        a, z = r * shape[0] // RANKS, (r + 1) * shape[0] // RANKS
                        pieces[r].append(moeflux_parts.Piece(name, data[a * row:z * row], offsets=[a] + [0] * (len(shape) - 1),
                                                             dtype=dtype, shape=[z - a] + shape[1:]))

                # Rank 2's first connection breaks after 4 KiB of its body.
                real = moeflux_parts._connection
                broken = []
                def connection(base_url, timeout):
                    conn = real(base_url, timeout)
                    if threading.current_thread().name == "rank-2" and not broken:
                        broken.append(conn)
                        sent, send = [0], conn.send
                        def breaking(data):
                            if sent[0] > 4096:
                                conn.sock.close()
                                raise BrokenPipeError("cut by the test")
                            sent[0] += len(data)
                            send(data)
                        conn.send = breaking
                    return conn
                moeflux_parts._connection = connection

                url = "http://127.0.0.1:" + sys.argv[1]
                moeflux_parts.declare_manifest(url, "declared", RANKS,
                                               {name: (dtype, shape) for name, dtype, shape, _ in whole})
                for checkpoint in ("declared", "undeclared"):
                    broken.clear()
                    answers = {}
                    def upload(rank):
                        answers[rank] = moeflux_parts.upload_part(url, checkpoint, rank, RANKS, pieces[rank], backoff=0.1)
                    threads = [threading.Thread(target=upload, args=(r,), name="rank-%d" % r) for r in range(RANKS)]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join()
                    print(checkpoint, json.dumps(sorted(a["state"] for a in answers.values())), len(broken))
                # A rank whose answer was lost sends its part again: told it arrived, it gets the commit.
                print("again", moeflux_parts.upload_part(url, "undeclared", 1, RANKS, pieces[1])["state"])
                """);
        try (IngestServer server = fromHfService()) {
            String out = runRanks(server, "ranks.py");

            assertThat(out).contains("declared [\"committed\", \"receiving\", \"receiving\", \"receiving\"] 1")
                    .contains("undeclared [\"committed\", \"receiving\", \"receiving\", \"receiving\"] 1")
                    .contains("again committed");
            assertThat(Manifests.of(tmp.resolve("out/declared"))).isEqualTo(Manifests.of(HF_FROM_HF));
            assertThat(Manifests.of(tmp.resolve("out/undeclared"))).isEqualTo(Manifests.of(HF_FROM_HF));
        }
    }

    /**
     * numpy arrays as pieces, where the machine's python3 has numpy (the client imports it only when given
     * arrays): two ranks each send one half of the columns of every matrix, non-contiguous views of the
     * whole arrays, with the dtype and shape read from the arrays (BF16, which numpy lacks, given as raw
     * 16-bit words and named); the declared checkpoint commits the reference conversion.
     */
    @Test
    void theRankClientTakesNumpyArraysReadingTheirDtypeAndShape() throws Exception {
        assumeThat(pythonInstalled()).as("python3 is installed").isTrue();
        assumeThat(python("import numpy")).as("python3 has numpy").isTrue();
        Files.writeString(tmp.resolve("arrays.py"), """
                import json, struct, sys
                import numpy
                sys.path.insert(0, sys.argv[2])
                import moeflux_parts

                WORDS = {"BF16": numpy.uint16, "F32": numpy.float32}
                whole, pieces = {}, [[], []]
                for path in sys.argv[3:]:
                    b = open(path, "rb").read()
                    n = struct.unpack("<Q", b[:8])[0]
                    for name, v in json.loads(b[8:8 + n]).items():
                        if name == "__metadata__":
                            continue
                        s, e = v["data_offsets"]
                        a = numpy.frombuffer(b, WORDS[v["dtype"]], (e - s) // numpy.dtype(WORDS[v["dtype"]]).itemsize, 8 + n + s)
                        a = a.reshape(v["shape"])
                        whole[name] = (v["dtype"], v["shape"])
                        named = v["dtype"] if v["dtype"] == "BF16" else None
                        if a.ndim == 2 and a.shape[1] > 1:
                            c = a.shape[1] // 2
                            pieces[0].append(moeflux_parts.Piece(name, a[:, :c], offsets=[0, 0], dtype=named))
                            pieces[1].append(moeflux_parts.Piece(name, a[:, c:], offsets=[0, c], dtype=named))
                        else:
                            pieces[len(pieces[0]) % 2].append(moeflux_parts.Piece(name, a, dtype=named))
                assert any(p.dtype == "F32" for p in pieces[0] + pieces[1]), "an F32 array named by numpy"
                url = "http://127.0.0.1:" + sys.argv[1]
                moeflux_parts.declare_manifest(url, "arrays", 2, whole)
                print(sorted(moeflux_parts.upload_part(url, "arrays", r, 2, pieces[r])["state"] for r in (0, 1)))
                """);
        try (IngestServer server = fromHfService()) {
            String out = runRanks(server, "arrays.py");

            assertThat(out).contains("['committed', 'receiving']");
            assertThat(Manifests.of(tmp.resolve("out/arrays"))).isEqualTo(Manifests.of(HF_FROM_HF));
        }
    }

    /** A service converting from-hf into {@code out/} under the temporary folder. */
    private IngestServer fromHfService() throws Exception {
        byte[] config = Files.readAllBytes(HF_IN.resolve("config.json"));
        return IngestServer.start(options(Direction.FROM_HF, tmp.resolve("out")).withConfigJson(config));
    }

    /**
     * Runs {@code script} of the temporary folder: its arguments are the service's port, the rank client's
     * folder and the reference's three shards. Returns what it printed, once it has exited with 0.
     */
    private String runRanks(IngestServer server, String script) throws Exception {
        Process p = new ProcessBuilder("python3", script, Integer.toString(server.port()), CLIENT.toAbsolutePath().toString(),
                HF_IN.resolve("model-00001-of-00003.safetensors").toAbsolutePath().toString(),
                HF_IN.resolve("model-00002-of-00003.safetensors").toAbsolutePath().toString(),
                HF_IN.resolve("model-00003-of-00003.safetensors").toAbsolutePath().toString())
                .directory(tmp.toFile()).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor()).as(out).isZero();
        return out;
    }

    /** Whether the machine's python3 runs {@code code} without an error. */
    static boolean python(String code) {
        try {
            return new ProcessBuilder("python3", "-c", code).redirectErrorStream(true).start().waitFor() == 0;
        } catch (java.io.IOException | InterruptedException e) {
            return false;
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
