package io.moeflux.connect.safetensors;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.Progress;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.testing.TrackedTensors;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Optional;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import reactor.core.publisher.Flux;

/** The order of the calls that make a commit durable and atomic, recorded through the sink's seam. */
class DurableCommitTest {
    @TempDir
    Path tmp;

    final TrackedTensors t = new TrackedTensors(5);

    /** Makes the real calls and records each, with the last tensor written before it. */
    static final class RecordingCalls implements CommitCalls {
        final List<String> log = Collections.synchronizedList(new ArrayList<>());
        final Path parent;
        IOException failExchange;

        RecordingCalls(Path parent) {
            this.parent = parent;
        }

        String name(Path p) {
            return p.getParent().equals(parent) ? (p.getFileName().toString().contains(".partial-") ? "staging" : "output")
                    : p.getFileName().toString();
        }

        @Override
        public void syncFile(Path file, FileChannel channel) throws IOException {
            log.add("sync " + name(file));
            SYSTEM.syncFile(file, channel);
        }

        @Override
        public void syncFolder(Path folder) throws IOException {
            log.add("sync folder " + (folder.equals(parent) ? "parent" : name(folder)));
            SYSTEM.syncFolder(folder);
        }

        @Override
        public void rename(Path from, Path to) throws IOException {
            log.add("rename " + name(from) + " to " + name(to));
            SYSTEM.rename(from, to);
        }

        @Override
        public void exchange(Path a, Path b) throws IOException {
            log.add("exchange " + name(a) + " and " + name(b));
            if (failExchange != null) {
                throw failExchange;
            }
            SYSTEM.exchange(a, b);
        }

        Progress progress() {
            return new Progress() {
                @Override
                public void bytesWritten(long bytes) {}

                @Override
                public void tensorWritten(String fqn) {
                    log.add("wrote " + fqn);
                }
            };
        }
    }

    List<TensorEvent> events() {
        return SafetensorsSinkTest.events(t);
    }

    CheckpointDescriptor planned(List<TensorEvent> in) {
        return new CheckpointDescriptor(Optional.of(SafetensorsSinkTest.infos(in)), Optional.of("{}".getBytes()));
    }

    List<String> written(Path out) throws IOException {
        try (Stream<Path> s = Files.list(out)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    @Test
    void everyFileIsSyncedThenTheFolderThenItIsRenamedThenTheParentIsSynced() throws Exception {
        List<TensorEvent> in = events();
        Path out = tmp.resolve("ckpt");
        RecordingCalls calls = new RecordingCalls(tmp);
        var summary = new FolderSink(SafetensorsSinkOptions.to(out).withMaxShardSize(1000).withWriteThreads(1)
                .withProgress(calls.progress()), calls).write(planned(in), Flux.fromIterable(in)).block();

        List<String> log = List.copyOf(calls.log);
        List<String> files = written(out);
        assertThat(summary.files()).isGreaterThan(2);
        assertThat(files).hasSize(summary.files() + 2);
        int stagingSync = log.indexOf("sync folder staging");
        int rename = log.indexOf("rename staging to output");
        int parentSync = log.indexOf("sync folder parent");
        assertThat(stagingSync).isPositive();
        assertThat(rename).isEqualTo(stagingSync + 1);
        assertThat(parentSync).isEqualTo(log.size() - 1).isEqualTo(rename + 1);
        for (String file : files) {
            assertThat(log.indexOf("sync " + file)).as(file).isBetween(0, stagingSync - 1);
        }
        assertThat(log).filteredOn(e -> e.startsWith("sync ") && !e.startsWith("sync folder")).hasSameSizeAs(files);
        // Shards are synced as they are finished, while later tensors are still to be written.
        assertThat(log.indexOf("sync model-00001-of-0000" + summary.files() + ".safetensors"))
                .isLessThan(log.indexOf("wrote " + in.getLast().fqn()));
        assertThat(t.live()).isZero();
    }

    @Test
    void aCheckpointWithoutAPlanSyncsEachShardAsItIsLaidOutFromTheSpool() throws Exception {
        List<TensorEvent> in = events();
        Path out = tmp.resolve("ckpt");
        RecordingCalls calls = new RecordingCalls(tmp);
        new FolderSink(SafetensorsSinkOptions.to(out).withMaxShardSize(1000), calls)
                .write(CheckpointDescriptor.UNKNOWN, Flux.fromIterable(in)).block();

        List<String> files = written(out);
        int stagingSync = calls.log.indexOf("sync folder staging");
        for (String file : files) {
            assertThat(calls.log.indexOf("sync " + file)).as(file).isBetween(0, stagingSync - 1);
        }
        assertThat(calls.log.subList(stagingSync, calls.log.size()))
                .containsExactly("sync folder staging", "rename staging to output", "sync folder parent");
    }

    @Test
    void forceSwapsTheNewCheckpointWithTheOldInOneStepAndDeletesTheOldOnlyAfterThat() throws Exception {
        Path out = tmp.resolve("ckpt");
        Files.createDirectories(out);
        Files.writeString(out.resolve("old.safetensors"), "the previous checkpoint");
        List<TensorEvent> in = events();
        RecordingCalls calls = new RecordingCalls(tmp);
        new FolderSink(SafetensorsSinkOptions.to(out).withOverwrite(true), calls)
                .write(planned(in), Flux.fromIterable(in)).block();

        int stagingSync = calls.log.indexOf("sync folder staging");
        assertThat(calls.log.subList(stagingSync, calls.log.size()))
                .containsExactly("sync folder staging", "exchange staging and output", "sync folder parent");
        assertThat(written(out)).containsExactly("config.json", "model.safetensors");
        // The old checkpoint, swapped to the staging name, is gone too.
        assertThat(written(tmp)).containsExactly("ckpt");
    }

    @Test
    void whereTheSwapIsUnavailableTheOldCheckpointStaysAndTheErrorSaysWhy() throws Exception {
        Path out = tmp.resolve("ckpt");
        Files.createDirectories(out);
        Files.writeString(out.resolve("old.safetensors"), "the previous checkpoint");
        List<TensorEvent> in = events();
        RecordingCalls calls = new RecordingCalls(tmp);
        calls.failExchange = new IOException("cannot replace " + out + " atomically: its file system cannot swap two names");
        assertThatThrownBy(() -> new FolderSink(SafetensorsSinkOptions.to(out).withOverwrite(true), calls)
                .write(planned(in), Flux.fromIterable(in)).block())
                .hasMessageContaining("cannot replace " + out + " atomically");

        assertThat(written(out)).containsExactly("old.safetensors");
        assertThat(written(tmp)).containsExactly("ckpt");
        assertThat(t.live()).isZero();
    }

    @Test
    void theSystemsSwapExchangesTwoFoldersWithoutEitherNameGoingMissing() throws Exception {
        Path a = Files.createDirectories(tmp.resolve("a"));
        Path b = Files.createDirectories(tmp.resolve("b"));
        Files.writeString(a.resolve("from-a"), "a");
        Files.writeString(b.resolve("from-b"), "b");
        CommitCalls.SYSTEM.exchange(a, b);
        assertThat(written(a)).containsExactly("from-b");
        assertThat(written(b)).containsExactly("from-a");
    }

    @Test
    void withoutDurabilityNothingIsSyncedButTheCommitIsStillOneRename() throws Exception {
        List<TensorEvent> in = events();
        Path out = tmp.resolve("ckpt");
        RecordingCalls calls = new RecordingCalls(tmp);
        new FolderSink(SafetensorsSinkOptions.to(out).withMaxShardSize(1000).withDurable(false), calls)
                .write(planned(in), Flux.fromIterable(in)).block();

        assertThat(calls.log).containsExactly("rename staging to output");
        assertThat(Manifests.of(out)).hasSize(in.size());
    }
}
