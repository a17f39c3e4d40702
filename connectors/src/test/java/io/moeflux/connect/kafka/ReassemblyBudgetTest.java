package io.moeflux.connect.kafka;

import static org.assertj.core.api.Assertions.assertThat;

import java.time.Duration;
import org.junit.jupiter.api.Test;
import reactor.test.StepVerifier;

class ReassemblyBudgetTest {
    @Test
    void reservationsWithinTheLimitGoAheadAtOnce() {
        ReassemblyBudget budget = new ReassemblyBudget(100);
        StepVerifier.create(budget.reserve(60)).verifyComplete();
        StepVerifier.create(budget.reserve(40)).verifyComplete();
        assertThat(budget.heldBytes()).isEqualTo(100);
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
        assertThat(budget.heldBytes()).isEqualTo(50);
        assertThat(budget.peakBytes()).isEqualTo(80);
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
        assertThat(budget.heldBytes()).isZero();
    }
}
