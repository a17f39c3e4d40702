package io.moeflux.connect.safetensors;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A cancel (abort) and the commit exclude each other: whichever comes first decides, so the output's
 * name never lands on a staging folder that is being deleted (a Ctrl-C in the last milliseconds of a
 * run once left a checkpoint with missing files under its final name).
 */
class StagingTest {
    @TempDir
    Path dir;

    private Staging stagedWithAFile() throws IOException {
        Staging staging = Staging.create(dir.resolve("out"), false, CommitCalls.SYSTEM.withoutSyncs());
        Files.writeString(staging.dir().resolve("model.safetensors"), "bytes");
        return staging;
    }

    @Test
    void aCommitAfterAnAbortIsRefusedAndNothingTakesTheName() throws IOException {
        Staging staging = stagedWithAFile();
        staging.abort();

        assertThatThrownBy(staging::commit).isInstanceOf(IOException.class).hasMessageContaining("cancelled before its commit");
        assertThat(dir.resolve("out")).doesNotExist();
        assertThat(staging.dir()).doesNotExist();
    }

    @Test
    void anAbortAfterTheCommitLeavesTheCheckpointWhole() throws IOException {
        Staging staging = stagedWithAFile();
        staging.commit();
        staging.abort();
        staging.abortIfNotCommitted();

        assertThat(dir.resolve("out/model.safetensors")).hasContent("bytes");
    }
}
