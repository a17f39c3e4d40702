package io.moeflux.connect.safetensors;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.moeflux.connect.InsufficientSpaceException;
import io.moeflux.connect.OutputExistsException;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSink;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.TensorInfo;
import io.moeflux.tensor.Tensors;
import io.moeflux.testing.TensorBytes;
import io.moeflux.testing.TrackedTensors;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Optional;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import reactor.core.publisher.Flux;
import reactor.test.StepVerifier;

class SafetensorsSinkTest {
    @TempDir
    Path tmp;

    final TrackedTensors t = new TrackedTensors(5);

    List<TensorEvent> events() {
        return events(t);
    }

    static List<TensorEvent> events(TrackedTensors t) {
        List<TensorEvent> list = new ArrayList<>();
        for (int i = 0; i < 12; i++) {
            list.add(t.event("model.layers." + i + ".w", i % 3 == 0 ? DType.F32 : DType.BF16, 16, 8));
        }
        list.add(t.event("model.ids", DType.I64, 3));
        list.add(t.event("model.mask", DType.BOOL, 5));
        return list;
    }

    static List<TensorInfo> infos(List<TensorEvent> events) {
        return events.stream().map(e -> e.tensor().info(e.fqn())).toList();
    }

    List<Path> listing(Path dir) throws Exception {
        try (Stream<Path> s = Files.list(dir)) {
            return s.sorted().toList();
        }
    }

    @Test
    void writesHeadersByteForByteAsHuggingFaceSafetensors() {
        byte[] h = SafetensorsFormat.encodeHeader(SafetensorsFormat.fileOrder(List.of(
                new TensorInfo("b", DType.BF16, new long[] {2}), new TensorInfo("a", DType.BF16, new long[] {1}),
                new TensorInfo("z", DType.F32, new long[] {}), new TensorInfo("q\"\n", DType.U8, new long[] {3}))));
        String json = "{\"__metadata__\":{\"format\":\"pt\"},\"z\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                + "\"a\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[4,6]},\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[6,10]},"
                + "\"q\\\"\\n\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[10,13]}}";
        int padded = (json.length() + 7) / 8 * 8;
        assertThat(h.length).isEqualTo(8 + padded);
        assertThat(java.nio.ByteBuffer.wrap(h).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong()).isEqualTo(padded);
        assertThat(new String(h, 8, padded, StandardCharsets.UTF_8)).isEqualTo(json + " ".repeat(padded - json.length()));
    }

    @Test
    void shardsByMaxSizeWithAnIndexAndReadsBackTheSameTensors() throws Exception {
        List<TensorEvent> in = events();
        var expected = new java.util.TreeMap<String, String>();
        in.forEach(e -> expected.put(e.fqn(), Manifests.describe(e)));
        Path out = tmp.resolve("ckpt");
        var summary = SafetensorsSink.create(SafetensorsSinkOptions.to(out).withMaxShardSize(1000))
                .write(new CheckpointDescriptor(Optional.of(infos(in)), Optional.of("{}".getBytes())), Flux.fromIterable(in))
                .block();
        assertThat(summary.files()).isGreaterThan(1);
        assertThat(out.resolve("model-00001-of-0000" + summary.files() + ".safetensors")).exists();
        assertThat(out.resolve("config.json")).hasContent("{}");
        String index = Files.readString(out.resolve(ShardIndex.FILE_NAME));
        assertThat(index).startsWith("{\n  \"metadata\": {\n    \"total_size\": " + summary.bytes() + "\n  },\n  \"weight_map\": {\n");
        assertThat(Manifests.of(out)).isEqualTo(expected);
        assertThat(t.live()).isZero();
        assertThat(listing(tmp)).containsExactly(out);
    }

    @Test
    void theCommittedFolderHasThePermissionsMkdirWouldGiveIt() throws Exception {
        List<TensorEvent> in = events();
        Path out = tmp.resolve("ckpt");
        SafetensorsSink.create(SafetensorsSinkOptions.to(out))
                .write(new CheckpointDescriptor(Optional.of(infos(in)), Optional.of("{}".getBytes())), Flux.fromIterable(in))
                .block();
        // A folder made the ordinary way in the same place gets 0777 less this process's umask.
        Path mkdir = Files.createDirectory(tmp.resolve("made-by-mkdir"));
        var expected = Files.getPosixFilePermissions(mkdir);
        // Under a umask of 077 mkdir's folders are private too, and there would be nothing to tell apart.
        org.assertj.core.api.Assumptions.assumeThat(expected).contains(java.nio.file.attribute.PosixFilePermission.OTHERS_READ);
        assertThat(Files.getPosixFilePermissions(out)).isEqualTo(expected);
        Files.createFile(mkdir.resolve("f"));
        assertThat(Files.getPosixFilePermissions(out.resolve("model.safetensors"))).isEqualTo(Files.getPosixFilePermissions(mkdir.resolve("f")));
        assertThat(t.live()).isZero();
    }

    @Test
    void outputDoesNotDependOnArrivalOrder() throws Exception {
        List<TensorEvent> a = events();
        TrackedTensors same = new TrackedTensors(5);
        List<TensorEvent> b = new ArrayList<>(events(same));
        Collections.shuffle(b, new Random(9));
        Path outA = tmp.resolve("a");
        Path outB = tmp.resolve("b");
        SafetensorsSink.create(SafetensorsSinkOptions.to(outA).withMaxShardSize(700))
                .write(CheckpointDescriptor.UNKNOWN, Flux.fromIterable(a)).block();
        SafetensorsSink.create(SafetensorsSinkOptions.to(outB).withMaxShardSize(700))
                .write(CheckpointDescriptor.UNKNOWN, Flux.fromIterable(b)).block();
        for (Path f : listing(outA)) {
            assertThat(outB.resolve(f.getFileName())).hasSameBinaryContentAs(f);
        }
    }

    @Test
    void refusesANonEmptyOutputUnlessOverwriting() throws Exception {
        Path out = tmp.resolve("ckpt");
        Files.createDirectories(out);
        Files.writeString(out.resolve("old.txt"), "keep");
        List<TensorEvent> in = events();
        assertThatThrownBy(() -> SafetensorsSink.create(SafetensorsSinkOptions.to(out))
                .write(CheckpointDescriptor.UNKNOWN, Flux.fromIterable(in)).block())
                .isInstanceOf(OutputExistsException.class).hasMessageContaining("is not empty");
        assertThat(out.resolve("old.txt")).hasContent("keep");
        SafetensorsSink.create(SafetensorsSinkOptions.to(out).withOverwrite(true))
                .write(CheckpointDescriptor.UNKNOWN, Flux.fromIterable(in)).block();
        assertThat(out.resolve("old.txt")).doesNotExist();
        assertThat(out.resolve("model.safetensors")).exists();
        assertThat(listing(tmp)).containsExactly(out);
        assertThat(t.live()).isZero();
    }

    @Test
    void aFailedWriteLeavesNothingBehindAndReleasesEveryTensor() throws Exception {
        Path out = tmp.resolve("ckpt");
        List<TensorEvent> in = events();
        Flux<TensorEvent> failing = Flux.fromIterable(in.subList(0, 6)).concatWith(Flux.error(new IllegalStateException("trainer crashed")));
        assertThatThrownBy(() -> SafetensorsSink.create(SafetensorsSinkOptions.to(out))
                .write(new CheckpointDescriptor(Optional.of(infos(in)), Optional.empty()), failing).block())
                .hasMessageContaining("trainer crashed");
        assertThat(listing(tmp)).isEmpty();
        in.subList(6, in.size()).forEach(TensorEvent::release);
        assertThat(t.live()).isZero();
    }

    @Test
    void aCancelledWriteLeavesNothingBehind() throws Exception {
        Path out = tmp.resolve("ckpt");
        List<TensorEvent> in = events();
        StepVerifier.create(SafetensorsSink.create(SafetensorsSinkOptions.to(out))
                        .write(CheckpointDescriptor.UNKNOWN, Flux.fromIterable(in.subList(0, 4)).concatWith(Flux.never())))
                .thenAwait(Duration.ofMillis(100))
                .thenCancel()
                .verify(Duration.ofSeconds(5));
        Thread.sleep(100);
        assertThat(listing(tmp)).isEmpty();
        in.subList(4, in.size()).forEach(TensorEvent::release);
        assertThat(t.live()).isZero();
    }

    @Test
    void refusesTensorsThatAreNotInThePlan() {
        Path out = tmp.resolve("ckpt");
        List<TensorEvent> in = events();
        TensorEvent stray = new TensorEvent("stray", Tensors.of(DType.U8, new long[] {1}, new byte[] {1}));
        assertThatThrownBy(() -> SafetensorsSink.create(SafetensorsSinkOptions.to(out))
                .write(new CheckpointDescriptor(Optional.of(infos(in)), Optional.empty()),
                        Flux.fromIterable(in).concatWith(Flux.just(stray))).block())
                .hasMessageContaining("tensor stray U8[1] was not in the planned checkpoint");
        assertThat(t.live()).isZero();
    }

    @Test
    void failsWhenAPlannedTensorNeverArrives() {
        Path out = tmp.resolve("ckpt");
        List<TensorEvent> in = events();
        assertThatThrownBy(() -> SafetensorsSink.create(SafetensorsSinkOptions.to(out))
                .write(new CheckpointDescriptor(Optional.of(infos(in)), Optional.empty()), Flux.fromIterable(in.subList(1, in.size())))
                .block())
                .hasMessageContaining("1 planned tensors never arrived, the first being model.layers.0.w");
        assertThat(out).doesNotExist();
    }
    @Test
    void aPlannedCheckpointTheDiskCannotHoldFailsWhenItsFilesAreCreatedAndLeavesNothing() throws Exception {
        Path out = tmp.resolve("ckpt");
        long elements = 1L << 49;
        assumeTrue(Files.getFileStore(tmp).getUsableSpace() < 2 * elements);
        TensorInfo huge = new TensorInfo("model.huge", DType.BF16, new long[] {elements});
        CheckpointSink sink = SafetensorsSink.create(SafetensorsSinkOptions.to(out));

        assertThatThrownBy(() -> sink.write(new CheckpointDescriptor(Optional.of(List.of(huge)), Optional.empty()), Flux.empty())
                .block())
                .hasCauseInstanceOf(InsufficientSpaceException.class).hasMessageContaining("no room for its");
        assertThat(listing(tmp)).isEmpty();
    }
}
