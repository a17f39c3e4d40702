package io.moeflux.connect.kafka;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.SpillArea;
import io.moeflux.tensor.TensorInfo;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import reactor.core.publisher.Flux;
import reactor.test.StepVerifier;

/** Reassembly without a broker: records as the sink makes them, delivered as a consumer would. */
class ReassemblerTest {
    static final List<TensorInfo> INFOS = TestCheckpoints.syntheticInfos(4, 10_000, 2);

    @TempDir
    Path tmp;

    /** The checkpoint's records on one partition, in publishing order, as consumer records. */
    static List<ConsumerRecord<byte[], byte[]>> records(String checkpoint, long seed) {
        Chunker chunker = new Chunker("t", checkpoint, 4096);
        List<ProducerRecord<byte[], byte[]>> out = new ArrayList<>();
        var manifest = chunker.manifest(WireFormat.manifestJson(checkpoint, Optional.of(INFOS), Optional.empty(), Optional.empty()), 1);
        out.addAll(manifest.first());
        out.addAll(manifest.rest());
        long bytes = 0;
        for (TensorEvent e : TestCheckpoints.synthetic(INFOS, seed).collectList().block()) {
            bytes += e.tensor().byteSize();
            out.addAll(chunker.chunks(e).collectList().block());
        }
        out.addAll(chunker.commits(INFOS.size(), bytes, new long[] {INFOS.size()}));
        List<ConsumerRecord<byte[], byte[]>> consumed = new ArrayList<>();
        for (var r : out) {
            consumed.add(new ConsumerRecord<>("t", 0, consumed.size(), 0, TimestampType.CREATE_TIME, 0, 0, r.key(), r.value(),
                    new RecordHeaders(r.headers().toArray()), Optional.empty()));
        }
        return consumed;
    }

    /** The source's own wiring of the reassembler, fed records from a list instead of a broker. */
    Flux<TensorEvent> reassemble(Reassembler reassembler, List<ConsumerRecord<byte[], byte[]>> records) {
        return ReactorKafkaSource.reassembled(Flux.fromIterable(records), reassembler);
    }

    @Test
    void reassemblesEveryTensorAndCompletesOnTheCommitRecord() {
        ReassemblyBudget budget = new ReassemblyBudget(1 << 20);
        Map<String, String> read = TestCheckpoints.digest(reassemble(
                new Reassembler("t", "c", Set.of(0), budget, SpillArea.in(tmp, 1 << 20)), records("c", 1)));
        assertThat(read).isEqualTo(TestCheckpoints.digest(TestCheckpoints.synthetic(INFOS, 1)));
        ReassemblyBudgetTest.assertHolds(budget, 1 << 20, 0);
    }

    @Test
    void cancellingMidTensorFreesWhatWasBeingReassembled() {
        ReassemblyBudget budget = new ReassemblyBudget(1 << 20);
        Reassembler reassembler = new Reassembler("t", "c", Set.of(0), budget, SpillArea.in(tmp, 1 << 20));
        List<ConsumerRecord<byte[], byte[]>> records = records("c", 1);
        // Everything up to the second chunk of the second tensor: one tensor out, one half-built.
        int cut = 0;
        int chunksOfSecond = 0;
        for (; cut < records.size(); cut++) {
            var h = records.get(cut).headers();
            if (WireFormat.text(h, WireFormat.TENSOR).orElse("").equals(INFOS.get(1).name()) && ++chunksOfSecond == 2) {
                break;
            }
        }
        StepVerifier.create(reassemble(reassembler, records.subList(0, cut)).concatWith(Flux.never()))
                .assertNext(TensorEvent::release)
                .thenCancel()
                .verify();
        ReassemblyBudgetTest.assertHolds(budget, 1 << 20, 0);
    }

    @Test
    void recordsOfOtherCheckpointsAndPartitionsArePassedOver() {
        List<ConsumerRecord<byte[], byte[]>> mixed = new ArrayList<>(records("other", 2));
        mixed.addAll(records("c", 1));
        ReassemblyBudget budget = new ReassemblyBudget(1 << 20);
        Map<String, String> read = TestCheckpoints.digest(reassemble(
                new Reassembler("t", "c", Set.of(0), budget, SpillArea.in(tmp, 1 << 20)), mixed));
        assertThat(read).isEqualTo(TestCheckpoints.digest(TestCheckpoints.synthetic(INFOS, 1)));
    }
}
