package io.moeflux.connect.http;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/** When staging memory runs out, an upload waits only for memory a slab that has all its weights will free. */
class StagingMemoryTest {
    @Test
    void memoryHeldByWeightsWaitingForTheirPartnersSpoolsTheNextWeight() {
        StagingMemory memory = new StagingMemory(2048);
        assertThat(memory.take(1024, "up#0", 2).buffer()).isNotNull();
        assertThat(memory.take(1024, "up#1", 2).buffer()).isNotNull();
        StagingMemory.Grant third = memory.take(1024, "up#2", 2);
        assertThat(third.buffer()).isNull();
        assertThat(third.freed()).as("waiting for memory only partners could free would never end").isNull();
    }

    @Test
    void memoryHeldByAWholeSlabMakesTheNextWeightWaitUntilItIsGivenBack() {
        StagingMemory memory = new StagingMemory(2048);
        StagingMemory.Buffer gate = memory.take(1024, "e#0", 2).buffer();
        memory.weightIn("e#0");
        StagingMemory.Buffer up = memory.take(1024, "e#0", 2).buffer();
        memory.weightIn("e#0");
        StagingMemory.Grant next = memory.take(1024, "e#1", 2);
        assertThat(next.buffer()).isNull();
        assertThat(next.freed()).isNotNull().isNotDone();

        memory.giveBack(gate);
        assertThat(next.freed()).isDone();
        assertThat(memory.take(1024, "e#1", 2).buffer()).as("the freed buffer, reused").isSameAs(gate);
        memory.giveBack(up);
    }

    @Test
    void aTensorLargerThanTheMemoryAndAnyTensorAfterCloseIsSpooled() {
        StagingMemory memory = new StagingMemory(1024);
        assertThat(memory.take(2048, "big", 1)).isEqualTo(StagingMemory.Grant.SPOOL);
        StagingMemory.Buffer held = memory.take(1024, "d#0", 1).buffer();
        memory.weightIn("d#0");
        StagingMemory.Grant waiting = memory.take(1024, "d#1", 1);
        memory.close();
        assertThat(waiting.freed()).as("closing wakes whoever waits").isDone();
        assertThat(memory.take(16, "d#2", 1)).isEqualTo(StagingMemory.Grant.SPOOL);
        memory.giveBack(held);
    }
}
