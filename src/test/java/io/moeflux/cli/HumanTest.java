package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

class HumanTest {
    @Test
    void bytesUseDecimalUnitsWithThreeSignificantDigits() {
        assertThat(Human.bytes(999)).isEqualTo("999 B");
        assertThat(Human.bytes(136_160)).isEqualTo("136 kB");
        assertThat(Human.bytes(96_864)).isEqualTo("96.9 kB");
        assertThat(Human.bytes(1_552_458_880L)).isEqualTo("1.55 GB");
    }

    @Test
    void durationsGrowFromMillisecondsToHours() {
        assertThat(Human.duration(0.0564)).isEqualTo("56 ms");
        assertThat(Human.duration(3.94)).isEqualTo("3.9 s");
        assertThat(Human.duration(125)).isEqualTo("2m05s");
        assertThat(Human.duration(3 * 3600 + 7 * 60)).isEqualTo("3h07m");
    }

    @Test
    void countsGroupThousands() {
        assertThat(Human.count(47_138)).isEqualTo("47,138");
    }

    @Test
    void ratesAndCountsReadAsPeopleWriteThem() {
        assertThat(Human.rate(1.6e9)).isEqualTo("1.60 GB/s");
        assertThat(Human.rate(1.64e6)).isEqualTo("1.6 MB/s");
        assertThat(Human.rate(2500)).isEqualTo("2.5 kB/s");
        assertThat(Human.count(1, "tensor")).isEqualTo("1 tensor");
        assertThat(Human.count(1024, "file")).isEqualTo("1,024 files");
    }
}
