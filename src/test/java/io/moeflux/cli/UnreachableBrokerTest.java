package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.net.InetAddress;
import java.net.ServerSocket;
import java.nio.file.Path;
import java.time.Duration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A Kafka location nobody answers at fails within seconds, in one line naming the address and why, exit 4. */
class UnreachableBrokerTest {
    private static final Path TINY_HF = Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf");

    @TempDir
    Path dir;

    /** A loopback port that was free a moment ago: connecting to it is refused. */
    private static int closedPort() throws Exception {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    private static void assertFailsFast(Cli r, long startNanos, String... contained) {
        assertThat(Duration.ofNanos(System.nanoTime() - startNanos)).isLessThan(Duration.ofSeconds(20));
        assertThat(r.exitCode()).as(r.err()).isEqualTo(ExitCodes.IO_FAILURE);
        assertThat(r.err().lines()).singleElement().asString().contains(contained);
    }

    @Test
    void aSinkWhoseBrokerRefusesTheConnectionFailsAtOnce() throws Exception {
        int port = closedPort();
        long start = System.nanoTime();

        Cli r = Cli.run("copy", TINY_HF, "kafka://127.0.0.1:" + port + "/t?checkpoint=a");

        assertFailsFast(r, start, "127.0.0.1:" + port, "connection refused");
    }

    @Test
    void aSourceWhoseBrokerRefusesTheConnectionFailsAtOnce() throws Exception {
        int port = closedPort();
        long start = System.nanoTime();

        Cli r = Cli.run("from-hf", "kafka://127.0.0.1:" + port + "/t", dir.resolve("out"));

        assertFailsFast(r, start, "127.0.0.1:" + port, "connection refused");
        assertThat(dir.resolve("out")).doesNotExist();
    }

    @Test
    void anUnknownHostIsNamed() {
        long start = System.nanoTime();

        Cli r = Cli.run("from-hf", "kafka://no-such-host.invalid:9092/t", dir.resolve("out"));

        assertFailsFast(r, start, "no-such-host.invalid:9092", "unknown host");
    }
}
