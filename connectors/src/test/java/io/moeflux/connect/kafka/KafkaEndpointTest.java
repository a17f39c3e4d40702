package io.moeflux.connect.kafka;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.Optional;
import org.junit.jupiter.api.Test;

class KafkaEndpointTest {
    @Test
    void parsesBrokersTopicAndCheckpoint() {
        KafkaEndpoint e = KafkaEndpoint.parse("kafka://k1:9092,k2.example:19092/ckpts?checkpoint=step-100");
        assertThat(e.bootstrapServers()).isEqualTo("k1:9092,k2.example:19092");
        assertThat(e.topic()).isEqualTo("ckpts");
        assertThat(e.checkpoint()).contains("step-100");
        assertThat(KafkaEndpoint.parse(e.toString())).isEqualTo(e);
    }

    @Test
    void aMissingCheckpointMeansTheNewest() {
        assertThat(KafkaEndpoint.parse("kafka://localhost:9092/t").checkpoint()).isEqualTo(Optional.empty());
    }

    @Test
    void onlyKafkaSchemesAreKafka() {
        assertThat(KafkaEndpoint.isKafka("kafka://h:1/t")).isTrue();
        assertThat(KafkaEndpoint.isKafka("/data/kafka://x")).isFalse();
    }

    @Test
    void malformedEndpointsAreRejectedWithTheExpectedForm() {
        for (String bad : new String[] {"kafka://h:1", "kafka://h:1/", "kafka://h/t", "kafka://h:1,/t",
                "kafka://h:1/t?partition=2", "kafka://h:1/t?checkpoint=", "kafka://h:1/t?checkpoint=a%20b",
                "kafka://h:1/bad topic", "http://h:1/t", "kafka://h:1/t?checkpoint=c&part=1",
                "kafka://h:1/t?checkpoint=c&part=4&parts=4", "kafka://h:1/t?checkpoint=c&part=x&parts=2",
                "kafka://h:1/t?part=0&parts=2", "kafka://h:1/t?checkpoint=c&checkpoint=d"}) {
            assertThatThrownBy(() -> KafkaEndpoint.parse(bad)).as(bad)
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessageContaining("kafka://HOST:PORT[,HOST:PORT]/TOPIC[?checkpoint=ID[&part=R&parts=N]]");
        }
    }

    @Test
    void aPartOfACheckpointIsNamedByPartAndPartsAndPrintsAsParsed() {
        KafkaEndpoint e = KafkaEndpoint.parse("kafka://h:1/t?checkpoint=step-1&part=2&parts=4");
        assertThat(e.part()).hasValue(new KafkaEndpoint.PartOf(2, 4));
        assertThat(e).hasToString("kafka://h:1/t?checkpoint=step-1&part=2&parts=4");
        assertThat(KafkaEndpoint.parse("kafka://h:1/t?checkpoint=step-1").part()).isEmpty();
    }
}
