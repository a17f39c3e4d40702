package io.moeflux.connect.kafka;

import static org.assertj.core.api.Assertions.assertThat;

import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.TensorInfo;
import io.moeflux.tensor.Tensors;
import java.util.List;
import java.util.Optional;
import org.apache.kafka.common.record.AbstractRecords;
import org.apache.kafka.common.record.CompressionType;
import org.apache.kafka.common.record.RecordBatch;
import org.junit.jupiter.api.Test;

class WireFormatTest {
    @Test
    void allTensorsOfALayerShareAKeyWhateverTheirPrefix() {
        assertThat(WireFormat.partitionKey("c", "model.layers.7.mlp.experts.3.up_proj.weight")).isEqualTo("c/layers.7");
        assertThat(WireFormat.partitionKey("c", "layers.7.mlp.experts.gate_and_up_projs")).isEqualTo("c/layers.7");
        assertThat(WireFormat.partitionKey("c", "model.language_model.layers.7.self_attn.q_proj.weight"))
                .isEqualTo("c/layers.7");
        assertThat(WireFormat.partitionKey("c", "model.layers.71.input_layernorm.weight")).isEqualTo("c/layers.71");
        assertThat(WireFormat.partitionKey("c", "model.embed_tokens.weight")).isEqualTo("c/model.embed_tokens.weight");
        assertThat(WireFormat.partitionKey("c", "lm_head.weight")).isEqualTo("c/lm_head.weight");
    }

    @Test
    void everyChunkRecordFitsTheChunkSizeIncludingItsFraming() {
        int chunkBytes = 64 << 10;
        TensorInfo info = new TensorInfo("model.layers.3.mlp.experts.12.down_proj.weight", DType.BF16, new long[] {96, 1000});
        Chunker chunker = new Chunker("t", "checkpoint-with-a-long-id", chunkBytes);
        var records = chunker.chunks(new TensorEvent(info.name(), Tensors.allocate(info.dtype(), info.shape())))
                .collectList().block();
        assertThat(records).hasSizeGreaterThan(2);
        for (var r : records) {
            int size = AbstractRecords.estimateSizeInBytesUpperBound(RecordBatch.CURRENT_MAGIC_VALUE, CompressionType.NONE,
                    r.key(), r.value(), r.headers().toArray());
            assertThat(size).isLessThanOrEqualTo(chunkBytes);
        }
        assertThat(records.getFirst().value().length).isEqualTo(WireFormat.payloadPerChunk("checkpoint-with-a-long-id",
                info, chunkBytes));
    }

    @Test
    void manifestsAndCommitsRoundTripThroughJson() {
        List<TensorInfo> infos = List.of(new TensorInfo("a", DType.F32, new long[] {2, 3}),
                new TensorInfo("b", DType.BF16, new long[] {}));
        var m = WireFormat.parseManifest(WireFormat.manifestJson("c", Optional.of(infos), Optional.of(new byte[] {'{', '}'}), Optional.empty()),
                "test");
        assertThat(m.checkpoint()).isEqualTo("c");
        assertThat(m.tensors()).contains(infos);
        assertThat(m.configJson()).hasValueSatisfying(c -> assertThat(c).containsExactly('{', '}'));
        assertThat(WireFormat.parseManifest(WireFormat.manifestJson("c", Optional.empty(), Optional.empty(), Optional.empty()), "test")
                .tensors()).isEmpty();

        var commit = new WireFormat.Commit("c", 10, 1000, 4, 3);
        assertThat(WireFormat.parseCommit(WireFormat.commitJson(commit), "test")).isEqualTo(commit);
    }
}
