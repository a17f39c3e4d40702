package io.moeflux.hy3;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.constraints.IntRange;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class ExpertRangeTest {
    @ParameterizedTest
    @CsvSource({
        "192, 1, 0, 0, 192",
        "192, 8, 0, 0, 24",
        "192, 8, 7, 168, 192",
        "10, 4, 0, 0, 3",
        "10, 4, 1, 3, 6",
        "10, 4, 2, 6, 8",
        "10, 4, 3, 8, 10",
        "3, 5, 4, 3, 3",
    })
    void ranksTakeContiguousRangesWithTheRemainderOnTheFirstRanks(int n, int size, int rank, int start, int end) {
        var r = Hy3Options.DEFAULTS.withExpertParallel(size, rank).expertRange(n);
        assertThat(r.start()).isEqualTo(start);
        assertThat(r.end()).isEqualTo(end);
    }

    @Property
    void rangesOfAllRanksTileTheExperts(@ForAll @IntRange(min = 1, max = 300) int n, @ForAll @IntRange(min = 1, max = 64) int size) {
        int next = 0;
        for (int rank = 0; rank < size; rank++) {
            var r = Hy3Options.DEFAULTS.withExpertParallel(size, rank).expertRange(n);
            assertThat(r.start()).isEqualTo(next);
            assertThat(r.size()).isBetween(n / size, n / size + 1);
            next = r.end();
        }
        assertThat(next).isEqualTo(n);
    }

    @org.junit.jupiter.api.Test
    void rejectsARankOutsideTheWorld() {
        assertThatThrownBy(() -> Hy3Options.DEFAULTS.withExpertParallel(4, 4)).hasMessageContaining("ep-rank");
    }
}
