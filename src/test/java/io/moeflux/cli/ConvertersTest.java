package io.moeflux.cli;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.time.Duration;
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

    @Test
    void timeoutsTakeAUnitOrPlainSecondsAndMustBePositive() {
        var timeout = new Converters.Timeout();
        assertThat(timeout.convert("500ms")).isEqualTo(Duration.ofMillis(500));
        assertThat(timeout.convert("30s")).isEqualTo(Duration.ofSeconds(30));
        assertThat(timeout.convert("45")).isEqualTo(Duration.ofSeconds(45));
        assertThat(timeout.convert("2m")).isEqualTo(Duration.ofMinutes(2));
        assertThat(timeout.convert("1H")).isEqualTo(Duration.ofHours(1));
        for (String bad : new String[] {"0", "0s", "-1s", "soon", "1.5s", "99999999999s"}) {
            assertThatThrownBy(() -> timeout.convert(bad)).as(bad).hasMessageContaining("invalid duration \"" + bad + "\"");
        }
    }
}
