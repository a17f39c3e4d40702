package io.moeflux.connect.kafka;

import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.DenseTensor;
import io.moeflux.tensor.SpillArea;
import io.moeflux.tensor.Tensor;
import io.moeflux.tensor.TensorInfo;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.zip.CRC32C;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.Header;
import reactor.core.publisher.Flux;
import reactor.kafka.sender.SenderRecord;

/** Cuts tensors, manifests and commits into records of the wire format. */
final class Chunker {
    /** What a send result refers to: a tensor's chunk (with its payload size), or a control record. */
    record Sent(String tensor, long payloadBytes, boolean lastOfTensor) {
        static final Sent CONTROL = new Sent("", 0, false);
    }

    private final String topic;
    private final String checkpoint;
    private final int chunkBytes;
    private final Optional<KafkaEndpoint.PartOf> part;

    /** For a publisher of {@code part} of a checkpoint, its chunks name the part and their piece's offsets. */
    Chunker(String topic, String checkpoint, int chunkBytes, Optional<KafkaEndpoint.PartOf> part) {
        this.topic = topic;
        this.checkpoint = checkpoint;
        this.chunkBytes = chunkBytes;
        this.part = part;
    }

    Chunker(String topic, String checkpoint, int chunkBytes) {
        this(topic, checkpoint, chunkBytes, Optional.empty());
    }

    /**
     * The tensor's chunks, produced on demand (one record's bytes copied per request), in order; the
     * event is released once the last chunk is cut or the stream stops. Tensors that compute their
     * bytes while written (merged experts) are materialised first, since chunks are pulled one by one.
     */
    Flux<SenderRecord<byte[], byte[], Sent>> chunks(TensorEvent event) {
        return Flux.using(() -> new Bytes(event), bytes -> {
            TensorInfo info = event.tensor().info(event.fqn());
            long total = info.byteSize();
            int payload = WireFormat.payloadPerChunk(checkpoint, info, chunkBytes);
            long count = Math.max(1, (total + payload - 1) / payload);
            byte[] key = WireFormat.partitionKey(checkpoint, info.name()).getBytes(StandardCharsets.UTF_8);
            CRC32C whole = new CRC32C();
            Optional<WireFormat.PieceOf> piece = part.map(p -> new WireFormat.PieceOf(p.part(), event.box().offsets()));
            return Flux.<SenderRecord<byte[], byte[], Sent>, Long>generate(() -> 0L, (index, sink) -> {
                long offset = index * payload;
                int len = (int) Math.min(payload, total - offset);
                byte[] value = new byte[len];
                MemorySegment.copy(bytes.segment, ValueLayout.JAVA_BYTE, offset, value, 0, len);
                CRC32C crc = new CRC32C();
                crc.update(value);
                whole.update(value);
                boolean last = index == count - 1;
                List<Header> headers = WireFormat.chunkHeaders(checkpoint, info.name(), info.dtype(), info.shape(), index,
                        count, offset, total, (int) crc.getValue(),
                        last ? Optional.of((int) whole.getValue()) : Optional.empty(), piece);
                sink.next(SenderRecord.create(new ProducerRecord<>(topic, null, key, value, headers),
                        new Sent(info.name(), len, last)));
                if (last) {
                    sink.complete();
                }
                return index + 1;
            });
        }, Bytes::release);
    }

    /**
     * The manifest cut into parts of at most one chunk, one full copy per partition: {@code first} holds
     * part 0 of every partition, {@code rest} the other parts.
     */
    record Manifest(List<SenderRecord<byte[], byte[], Sent>> first, List<SenderRecord<byte[], byte[], Sent>> rest) {}

    Manifest manifest(byte[] json, int partitions) {
        int partBytes = chunkBytes - 1024;
        int parts = Math.max(1, (json.length + partBytes - 1) / partBytes);
        List<SenderRecord<byte[], byte[], Sent>> first = new ArrayList<>(partitions);
        List<SenderRecord<byte[], byte[], Sent>> rest = new ArrayList<>((parts - 1) * partitions);
        for (int p = 0; p < partitions; p++) {
            for (int i = 0; i < parts; i++) {
                int from = i * partBytes;
                byte[] value = java.util.Arrays.copyOfRange(json, from, Math.min(json.length, from + partBytes));
                List<Header> headers = new ArrayList<>(List.of(WireFormat.header(WireFormat.TYPE, WireFormat.MANIFEST),
                        WireFormat.header(WireFormat.CHECKPOINT, checkpoint),
                        WireFormat.header(WireFormat.CHUNK, Integer.toString(i)),
                        WireFormat.header(WireFormat.CHUNKS, Integer.toString(parts))));
                // The manifests of many parts interleave in a partition: the part header keeps each one's records apart.
                part.ifPresent(of -> headers.add(WireFormat.header(WireFormat.PART, Integer.toString(of.part()))));
                (i == 0 ? first : rest).add(control(p, value, headers));
            }
        }
        return new Manifest(first, rest);
    }

    /**
     * One commit record per partition, each saying how many tensors (for a part: pieces) that partition
     * carries.
     */
    List<SenderRecord<byte[], byte[], Sent>> commits(long tensors, long bytes, long[] partitionTensors) {
        List<SenderRecord<byte[], byte[], Sent>> records = new ArrayList<>(partitionTensors.length);
        for (int p = 0; p < partitionTensors.length; p++) {
            byte[] value = WireFormat.commitJson(new WireFormat.Commit(checkpoint, tensors, bytes, partitionTensors.length,
                    partitionTensors[p], part));
            records.add(control(p, value, List.of(WireFormat.header(WireFormat.TYPE, WireFormat.COMMIT),
                    WireFormat.header(WireFormat.CHECKPOINT, checkpoint))));
        }
        return records;
    }

    SenderRecord<byte[], byte[], Sent> segment(WireFormat.Segment segment) {
        return control(0, WireFormat.segmentJson(segment), List.of(WireFormat.header(WireFormat.TYPE, WireFormat.SEGMENT),
                WireFormat.header(WireFormat.CHECKPOINT, checkpoint)));
    }

    private SenderRecord<byte[], byte[], Sent> control(int partition, byte[] value, List<Header> headers) {
        byte[] key = WireFormat.controlKey(checkpoint).getBytes(StandardCharsets.UTF_8);
        return SenderRecord.create(new ProducerRecord<>(topic, partition, key, value, headers), Sent.CONTROL);
    }

    /** A tensor's bytes as one segment: its own, or a copy for tensors that compute them while written. */
    private static final SpillArea SPILL = SpillArea.inTempDir();

    private static final class Bytes {
        final TensorEvent event;
        final MemorySegment segment;
        final Optional<DenseTensor> copy;

        Bytes(TensorEvent event) {
            this.event = event;
            Tensor t = event.tensor();
            Optional<MemorySegment> direct;
            try {
                direct = t.contiguous();
            } catch (RuntimeException e) {
                event.release();
                throw e;
            }
            if (direct.isPresent()) {
                this.copy = Optional.empty();
                this.segment = direct.get();
            } else {
                try {
                    // A merged expert tensor is gigabytes: it is computed into page cache, not the heap.
                    DenseTensor materialized = SPILL.materialize(t);
                    this.copy = Optional.of(materialized);
                    this.segment = materialized.data();
                } catch (IOException e) {
                    event.release();
                    throw new UncheckedIOException("cannot compute the bytes of tensor " + event.fqn(), e);
                } catch (RuntimeException e) {
                    event.release();
                    throw e;
                }
            }
        }

        void release() {
            copy.ifPresent(DenseTensor::release);
            event.release();
        }
    }
}
