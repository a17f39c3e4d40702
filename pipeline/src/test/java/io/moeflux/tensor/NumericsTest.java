package io.moeflux.tensor;

import static org.assertj.core.api.Assertions.assertThat;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import org.junit.jupiter.api.Test;

class NumericsTest {
    @Test
    void bf16RoundsHalfwayCasesToEven() {
        // 1 + 2^-8 is exactly halfway between bf16 1.0 (0x3F80) and the next value (0x3F81): ties to even.
        assertThat(Numerics.floatToBf16(Float.intBitsToFloat(0x3F808000))).isEqualTo((short) 0x3F80);
        // 0x3F81 is odd, so its halfway point rounds up to 0x3F82.
        assertThat(Numerics.floatToBf16(Float.intBitsToFloat(0x3F818000))).isEqualTo((short) 0x3F82);
        assertThat(Numerics.floatToBf16(Float.intBitsToFloat(0x3F808001))).isEqualTo((short) 0x3F81);
    }

    @Test
    void bf16KeepsInfinitiesAndCanonicalisesNaN() {
        assertThat(Numerics.floatToBf16(Float.POSITIVE_INFINITY)).isEqualTo((short) 0x7F80);
        assertThat(Numerics.floatToBf16(Float.NEGATIVE_INFINITY)).isEqualTo((short) 0xFF80);
        assertThat(Numerics.floatToBf16(Float.intBitsToFloat(0xFFC12345))).isEqualTo((short) 0x7FC0);
        // The largest finite floats round up to infinity, as torch does.
        assertThat(Numerics.floatToBf16(Float.MAX_VALUE)).isEqualTo((short) 0x7F80);
    }

    @Property
    void bf16IsTheNearestRepresentableValueTiesToEven(@ForAll float f) {
        if (Float.isNaN(f) || Float.isInfinite(f) || Math.abs(f) >= 0x1.FEp127f) {
            return;
        }
        short b = Numerics.floatToBf16(f);
        double got = Numerics.bf16ToFloat(b);
        int bits = Float.floatToRawIntBits(f);
        double down = Float.intBitsToFloat(bits & 0xFFFF0000);
        double up = Float.intBitsToFloat((bits & 0xFFFF0000) + 0x10000);
        double dDown = Math.abs(f - down);
        double dUp = Math.abs(up - f);
        double expected = dDown < dUp ? down : dUp < dDown ? up : (((bits >>> 16) & 1) == 0 ? down : up);
        assertThat(got).isEqualTo(expected);
    }

    @Property
    void bf16OfABf16ValueIsExact(@ForAll short b) {
        float f = Numerics.bf16ToFloat(b);
        if (!Float.isNaN(f)) {
            assertThat(Numerics.floatToBf16(f)).isEqualTo(b);
        }
    }
}
