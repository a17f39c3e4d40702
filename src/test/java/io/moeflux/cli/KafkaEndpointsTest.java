package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.connect.kafka.LocalKafkaBroker;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** kafka:// endpoints on either side of copy, from-hf and to-hf, through a real broker. */
class KafkaEndpointsTest {
    private static final Path TINY_HF = Cli.REFERENCE_VECTORS.resolve("hy3-tiny/hf");
    private static final Path TINY_NATIVE = Cli.REFERENCE_VECTORS.resolve("hy3-tiny/native");

    @TempDir
    static Path brokerDir;

    static LocalKafkaBroker broker;

    @TempDir
    Path dir;

    @BeforeAll
    static void startBroker() {
        broker = LocalKafkaBroker.start(0, brokerDir);
    }

    @AfterAll
    static void stopBroker() {
        broker.close();
    }

    private static String topic(String name, String checkpoint) {
        return "kafka://" + broker.bootstrapServers() + "/" + name + "?checkpoint=" + checkpoint;
    }

    @Test
    void loraAdaptersConvertOutOfKafkaAsTheReferenceDoes() {
        Path loraHf = Cli.REFERENCE_VECTORS.resolve("hy3-lora-hf/hf");
        Cli publish = Cli.run("copy", loraHf, topic("lora-hf", "step-1"));
        assertThat(publish.exitCode()).as(publish.err()).isEqualTo(ExitCodes.OK);

        Path out = dir.resolve("lora-native");
        Cli convert = Cli.run("from-hf", topic("lora-hf", "step-1"), out);
        assertThat(convert.exitCode()).as(convert.err()).isEqualTo(ExitCodes.OK);
        assertThat(Cli.run("verify", out, Cli.REFERENCE_VECTORS.resolve("hy3-lora-hf/native")).out()).contains("identical: 54 tensors");
    }

    /**
     * Each rank of the reference's four-rank DCP save publishes its own file as one part, at once; from-hf out
     * of Kafka gives the reference's native checkpoint, and copy its consolidation.
     */
    @Test
    void ranksPublishTheirFilesAsPartsAndFromHfOutOfKafkaEqualsTheReference() throws Exception {
        Path save = Cli.REFERENCE_VECTORS.resolve("hy3-tiny-dcp/sharded");
        ExecutorService ranks = Executors.newFixedThreadPool(4);
        try {
            List<Future<Cli>> published = new java.util.ArrayList<>();
            for (int r = 0; r < 4; r++) {
                Path file = save.resolve(String.format("shard-%05d-model-00001-of-00001.safetensors", r + 1));
                String part = topic("ranks", "step-1") + "&part=" + r + "&parts=4";
                published.add(ranks.submit(() -> Cli.run("copy", file, part)));
            }
            for (Future<Cli> f : published) {
                Cli publish = f.get(60, TimeUnit.SECONDS);
                assertThat(publish.exitCode()).as(publish.err()).isEqualTo(ExitCodes.OK);
            }
        } finally {
            ranks.shutdownNow();
        }
        Path nativeOut = dir.resolve("native");
        Cli convert = Cli.run("from-hf", topic("ranks", "step-1"), nativeOut);
        assertThat(convert.exitCode()).as(convert.err()).isEqualTo(ExitCodes.OK);
        assertThat(Cli.run("verify", nativeOut, TINY_NATIVE).out()).contains("identical: 44 tensors");
        Path hf = dir.resolve("hf");
        assertThat(Cli.run("copy", topic("ranks", "step-1"), hf).exitCode()).isEqualTo(ExitCodes.OK);
        assertThat(Cli.run("verify", hf, TINY_HF).out()).contains("identical: 129 tensors");
    }

    /** A whole sharded save published as one checkpoint of whole tensors: each gathered from its pieces on the way. */
    @Test
    void aShardedSaveFolderPublishesAsAWholeCheckpoint() {
        Path save = Cli.REFERENCE_VECTORS.resolve("hy3-tiny-dcp/sharded");
        Cli publish = Cli.run("copy", save, topic("save", "step-1"));
        assertThat(publish.exitCode()).as(publish.err()).isEqualTo(ExitCodes.OK);
        Path hf = dir.resolve("hf");
        assertThat(Cli.run("copy", topic("save", "step-1"), hf).exitCode()).isEqualTo(ExitCodes.OK);
        assertThat(Cli.run("verify", hf, TINY_HF).out()).contains("identical: 129 tensors");
    }

    @Test
    void copyToKafkaThenFromHfOutOfKafkaEqualsTheReference() {
        Cli publish = Cli.run("copy", TINY_HF, topic("hf", "step-1"));
        assertThat(publish.exitCode()).as(publish.err()).isEqualTo(ExitCodes.OK);

        Path out = dir.resolve("native");
        Cli convert = Cli.run("from-hf", topic("hf", "step-1"), out);
        assertThat(convert.exitCode()).as(convert.err()).isEqualTo(ExitCodes.OK);
        assertThat(Cli.run("verify", out, TINY_NATIVE).out()).contains("identical: 44 tensors");
    }

    @Test
    void fromHfKafkaToKafkaThenToHfOutOfKafkaRoundTrips() {
        assertThat(Cli.run("copy", TINY_HF, topic("k-hf", "c")).exitCode()).isEqualTo(ExitCodes.OK);
        Cli convert = Cli.run("from-hf", topic("k-hf", "c"), topic("k-native", "c"));
        assertThat(convert.exitCode()).as(convert.err()).isEqualTo(ExitCodes.OK);

        Path nativeOut = dir.resolve("native");
        assertThat(Cli.run("copy", "kafka://" + broker.bootstrapServers() + "/k-native", nativeOut).exitCode())
                .isEqualTo(ExitCodes.OK);
        assertThat(Cli.run("verify", nativeOut, TINY_NATIVE).out()).contains("identical: 44 tensors");
    }

    @Test
    void twoScaleOutMembersShareAFromHfConversion() throws Exception {
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrapServers()))) {
            admin.createTopics(List.of(new NewTopic("so-hf", 4, (short) 1))).all().get(60, TimeUnit.SECONDS);
        }
        assertThat(Cli.run("copy", TINY_HF, topic("so-hf", "c")).exitCode()).isEqualTo(ExitCodes.OK);
        Callable<Cli> member = () -> Cli.run("scale-out", "from-hf", topic("so-hf", "c"), topic("so-native", "c"),
                "--group", "converters");
        try (ExecutorService pool = Executors.newFixedThreadPool(2)) {
            List<Future<Cli>> members = pool.invokeAll(List.of(member, member), 120, TimeUnit.SECONDS);
            for (Future<Cli> m : members) {
                assertThat(m.get().exitCode()).as(m.get().err()).isEqualTo(ExitCodes.OK);
                assertThat(m.get().out()).contains("44 tensors").contains("committed by the group");
            }
        }
        Path out = dir.resolve("native");
        assertThat(Cli.run("copy", topic("so-native", "c"), out).exitCode()).isEqualTo(ExitCodes.OK);
        assertThat(Cli.run("verify", out, TINY_NATIVE).out()).contains("identical: 44 tensors");
    }

    @Test
    void aKafkaDestinationWithoutACheckpointIdIsABadInput() {
        Cli publish = Cli.run("copy", TINY_HF, "kafka://" + broker.bootstrapServers() + "/t");
        assertThat(publish.exitCode()).isEqualTo(ExitCodes.BAD_INPUT);
        assertThat(publish.err()).contains("needs a checkpoint id");
    }
}
