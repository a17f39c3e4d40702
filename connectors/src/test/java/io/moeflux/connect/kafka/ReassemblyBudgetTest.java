package io.moeflux.connect.kafka;

import static org.assertj.core.api.Assertions.assertThat;

import java.time.Duration;
import org.junit.jupiter.api.Test;
import reactor.test.StepVerifier;

class ReassemblyBudgetTest {
    /**
     * Shows that {@code budget} holds exactly {@code held} bytes (fewer than {@code limit}) by what it
     * lets through, the only thing it shows: with a byte held downstream, reservations past the limit
     * wait, so {@code limit - held - 1} more fit and then not one byte more. Leaves the budget used.
     */
    static void assertHolds(ReassemblyBudget budget, long limit, long held) {
        StepVerifier.create(budget.reserve(1)).verifyComplete();
        budget.handedOut(1);
        StepVerifier.create(budget.reserve(limit - held - 1)).verifyComplete();
        StepVerifier.create(budget.reserve(1)).expectSubscription().expectNoEvent(Duration.ofMillis(20)).thenCancel().verify();
    }

    @Test
    void reservationsWithinTheLimitGoAheadAtOnce() {
        ReassemblyBudget budget = new ReassemblyBudget(100);
        StepVerifier.create(budget.reserve(60)).verifyComplete();
        StepVerifier.create(budget.reserve(40)).verifyComplete();
        assertThat(budget.peakBytes()).isEqualTo(100);
    }

    @Test
    void overTheLimitAReservationWaitsUntilTheDownstreamReleasesATensor() {
        ReassemblyBudget budget = new ReassemblyBudget(100);
        budget.reserve(80).block();
        budget.handedOut(80);
        StepVerifier.create(budget.reserve(50))
                .expectSubscription()
                .expectNoEvent(Duration.ofMillis(50))
                .then(() -> assertThat(budget.hasWaiters()).isTrue())
                .then(() -> budget.released(80))
                .verifyComplete();
        assertThat(budget.peakBytes()).isEqualTo(80);
        assertHolds(budget, 100, 50);
    }

    @Test
    void withNothingHeldDownstreamAReservationGoesAheadOverTheLimit() {
        ReassemblyBudget budget = new ReassemblyBudget(100);
        budget.reserve(80).block();
        StepVerifier.create(budget.reserve(50)).verifyComplete();
        assertThat(budget.peakBytes()).isEqualTo(130);
    }

    @Test
    void aCancelledWaiterGivesUpItsPlace() {
        ReassemblyBudget budget = new ReassemblyBudget(100);
        budget.reserve(100).block();
        budget.handedOut(100);
        StepVerifier.create(budget.reserve(10)).expectSubscription().thenCancel().verify();
        assertThat(budget.hasWaiters()).isFalse();
        budget.released(100);
        assertHolds(budget, 100, 0);
    }
}
