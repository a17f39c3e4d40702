package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;

class ConvertersTest {
    @Test
    void shardSizesCountDecimalUnitsLikeHuggingFace() {
        assertThat(Converters.parseByteSize("5GB")).isEqualTo(5_000_000_000L);
        assertThat(Converters.parseByteSize("500MB")).isEqualTo(500_000_000L);
        assertThat(Converters.parseByteSize("10kb")).isEqualTo(10_000L);
        assertThat(Converters.parseByteSize("1.5GB")).isEqualTo(1_500_000_000L);
    }

    @Test
    void shardSizesCountBinaryUnitsWithI() {
        assertThat(Converters.parseByteSize("1GiB")).isEqualTo(1L << 30);
        assertThat(Converters.parseByteSize("64MiB")).isEqualTo(64L << 20);
    }

    @Test
    void plainNumbersAreBytes() {
        assertThat(Converters.parseByteSize("123")).isEqualTo(123L);
        assertThat(Converters.parseByteSize("123B")).isEqualTo(123L);
    }

    @Test
    void garbageAndZeroAreRejected() {
        assertThatThrownBy(() -> Converters.parseByteSize("GB")).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> Converters.parseByteSize("5XB")).isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> Converters.parseByteSize("0")).isInstanceOf(IllegalArgumentException.class);
    }
}
