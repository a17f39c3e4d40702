package io.moeflux.connect.kafka;

import io.moeflux.tensor.TensorInfo;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.internals.BuiltInPartitioner;

/**
 * Builds a checkpoint's records exactly as the sink does, lets a test tamper with them (drop, corrupt,
 * duplicate, interleave), and sends them with a plain producer, in the order given.
 */
final class RawPublisher {
    private final String bootstrapServers;
    private final String topic;
    private final int partitions;
    private final int chunkBytes;

    RawPublisher(String bootstrapServers, String topic, int partitions, int chunkBytes) {
        this.bootstrapServers = bootstrapServers;
        this.topic = topic;
        this.partitions = partitions;
        this.chunkBytes = chunkBytes;
    }

    /** The checkpoint's records: manifests, chunks, commits. */
    List<ProducerRecord<byte[], byte[]>> records(String checkpoint, List<TensorInfo> infos, long seed) {
        Chunker chunker = new Chunker(topic, checkpoint, chunkBytes);
        List<ProducerRecord<byte[], byte[]>> out = new ArrayList<>();
        var manifest = chunker.manifest(WireFormat.manifestJson(checkpoint, Optional.of(infos), Optional.empty(), Optional.empty()), partitions);
        out.addAll(manifest.first());
        out.addAll(manifest.rest());
        long[] perPartition = new long[partitions];
        long bytes = 0;
        for (var event : TestCheckpoints.synthetic(infos, seed).collectList().block()) {
            bytes += event.tensor().byteSize();
            for (var r : chunker.chunks(event).collectList().block()) {
                int p = BuiltInPartitioner.partitionForKey(r.key(), partitions);
                out.add(new ProducerRecord<>(topic, p, r.key(), r.value(), r.headers()));
                if (r.correlationMetadata().lastOfTensor()) {
                    perPartition[p]++;
                }
            }
        }
        chunker.commits(infos.size(), bytes, perPartition).forEach(out::add);
        return out;
    }

    static boolean isChunk(ProducerRecord<byte[], byte[]> r, String tensor, long index) {
        return WireFormat.DATA.equals(WireFormat.typeOf(r.headers()))
                && WireFormat.text(r.headers(), WireFormat.TENSOR).orElse("").equals(tensor)
                && WireFormat.text(r.headers(), WireFormat.CHUNK).orElse("").equals(Long.toString(index));
    }

    static boolean isCommit(ProducerRecord<byte[], byte[]> r) {
        return WireFormat.COMMIT.equals(WireFormat.typeOf(r.headers()));
    }

    void send(List<ProducerRecord<byte[], byte[]>> records) {
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(ReactorKafkaSink.producerProperties(
                bootstrapServers, chunkBytes, 32L << 20, Map.of()))) {
            for (var r : records) {
                producer.send(r).get(60, TimeUnit.SECONDS);
            }
        } catch (Exception e) {
            throw new IllegalStateException("cannot publish test records", e);
        }
    }
}
