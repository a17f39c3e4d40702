package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.connect.kafka.LocalKafkaBroker;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code moeflux broker} refuses, in one line and with exit 4, what would break a running broker or spew logs. */
class BrokerRefusalTest {
    @TempDir
    Path dir;

    private static byte[] quorumState(Path dataDir) throws Exception {
        try (Stream<Path> files = Files.walk(dataDir)) {
            Path state = files.filter(f -> f.getFileName().toString().equals("quorum-state")).findFirst().orElseThrow();
            return Files.readAllBytes(state);
        }
    }

    @Test
    void aSecondBrokerOnADataFolderInUseIsRefusedAndWritesNothing() throws Exception {
        Path data = dir.resolve("data");
        try (LocalKafkaBroker running = LocalKafkaBroker.start(0, data)) {
            byte[] before = quorumState(data);

            Cli r = Cli.run("broker", "--port", "0", "--data-dir", data);

            assertThat(r.exitCode()).isEqualTo(ExitCodes.IO_FAILURE);
            assertThat(r.err().lines()).singleElement().asString().contains(data.toString())
                    .contains("in use by another broker");
            assertThat(quorumState(data)).isEqualTo(before);
            assertThat(running.port()).isPositive();
        }
    }

    @Test
    void aBusyPortIsNamedInOneLineAndNothingIsWritten() throws Exception {
        Path data = dir.resolve("fresh");
        try (ServerSocket taken = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            Cli r = Cli.run("broker", "--port", taken.getLocalPort(), "--data-dir", data);

            assertThat(r.exitCode()).isEqualTo(ExitCodes.IO_FAILURE);
            assertThat(r.err().lines()).singleElement().asString().contains("port " + taken.getLocalPort() + " is in use");
            assertThat(data).doesNotExist();
        }
    }

    @Test
    void aPortOutOfRangeIsAUsageError() {
        Cli r = Cli.run("broker", "--port", "70000", "--data-dir", dir.resolve("never"));

        assertThat(r.exitCode()).isEqualTo(ExitCodes.USAGE);
        assertThat(r.err().lines()).singleElement().asString().contains("invalid port \"70000\"");
        assertThat(dir.resolve("never")).doesNotExist();
    }
}
