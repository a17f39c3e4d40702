package io.moeflux.connect.kafka;

import io.moeflux.pipeline.Progress;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;

/**
 * How a checkpoint is published to a topic.
 *
 * <p>Tune together: {@code chunkBytes} must not exceed the topic's {@code max.message.bytes} (broker
 * default 1 MiB plus a little), and {@code bufferMemory} must hold at least two chunks; the number of
 * chunks in flight is {@code bufferMemory / chunkBytes - 1}, so sends never wait for buffer space on a
 * Reactor thread. Transactions need a broker with a transaction coordinator (any KRaft broker) and a
 * {@code transactionalId} unique among concurrently running publishers.
 *
 * @param bootstrapServers    brokers ({@code host:port,...})
 * @param topic               the topic; created with {@code partitionsIfCreated} partitions when missing
 * @param checkpointId        the id consumers ask for ({@code ?checkpoint=ID})
 * @param chunkBytes          the largest record, framing included (default 1 MiB, Kafka's default request limit)
 * @param bufferMemory        the producer's {@code buffer.memory} (default 32 MiB)
 * @param transactions        whether and how publishing is wrapped in transactions
 * @param transactionalId     the producer's {@code transactional.id} when {@code transactions != NONE}
 * @param partitionsIfCreated partitions of a topic this sink creates (one per converter instance you plan to run)
 * @param producerProperties  further producer settings, applied last (e.g. {@code compression.type})
 * @param progress            told of every byte and tensor acknowledged by the broker
 * @param part                when present, this publisher is one of many (one per rank), each publishing its
 *                            own part of the checkpoint: its manifest, its pieces and its commit records; a
 *                            reader completes the checkpoint once every part has committed. The transactional
 *                            id then needs the part in it, as the default has
 */
public record KafkaSinkOptions(String bootstrapServers, String topic, String checkpointId, int chunkBytes,
        long bufferMemory, Transactions transactions, String transactionalId, int partitionsIfCreated,
        Map<String, Object> producerProperties, Progress progress, Optional<KafkaEndpoint.PartOf> part) {

    public static final int DEFAULT_CHUNK_BYTES = 1 << 20;
    public static final long DEFAULT_BUFFER_MEMORY = 32L << 20;

    /** How publishing is wrapped in transactions, so {@code read_committed} consumers never see a partial checkpoint. */
    public enum Transactions {
        /** Idempotent producer only; readers wait for the commit record before they finish. */
        NONE,
        /** One transaction for the whole checkpoint. */
        PER_CHECKPOINT,
        /** One transaction per layer (smaller transactions), the commit record in the last one. */
        PER_LAYER
    }

    public KafkaSinkOptions {
        Objects.requireNonNull(bootstrapServers, "bootstrapServers");
        Objects.requireNonNull(topic, "topic");
        WireFormat.checkCheckpointId(checkpointId);
        if (chunkBytes < 4096) {
            throw new IllegalArgumentException("chunkBytes must be at least 4096, got " + chunkBytes);
        }
        if (bufferMemory < 2L * chunkBytes) {
            throw new IllegalArgumentException("bufferMemory (" + bufferMemory + ") must hold at least two chunks ("
                    + chunkBytes + " bytes each)");
        }
        Objects.requireNonNull(transactions, "transactions");
        Objects.requireNonNull(transactionalId, "transactionalId");
        if (partitionsIfCreated < 1) {
            throw new IllegalArgumentException("partitionsIfCreated must be positive, got " + partitionsIfCreated);
        }
        producerProperties = Map.copyOf(producerProperties);
        Objects.requireNonNull(progress, "progress");
        Objects.requireNonNull(part, "part");
    }

    /** Publishes to {@code endpoint} (the checkpoint, or one part of it), which must name the checkpoint id. */
    public static KafkaSinkOptions to(KafkaEndpoint endpoint) {
        String id = endpoint.checkpoint().orElseThrow(() -> new IllegalArgumentException(
                "a Kafka destination needs a checkpoint id: " + endpoint + "?checkpoint=ID"));
        return new KafkaSinkOptions(endpoint.bootstrapServers(), endpoint.topic(), id, DEFAULT_CHUNK_BYTES,
                DEFAULT_BUFFER_MEMORY, Transactions.NONE, "moeflux-" + endpoint.topic() + "-" + id
                        + endpoint.part().map(p -> "-part-" + p.part()).orElse(""), 1, Map.of(),
                Progress.NONE, endpoint.part());
    }

    /**
     * Chunks in flight: as many as {@code buffer.memory} holds, less one, so a send never waits for
     * buffer space (the producer acknowledges a batch just before it frees the batch's memory).
     */
    public int maxInFlight() {
        return (int) Math.max(1, Math.min(Integer.MAX_VALUE, bufferMemory / chunkBytes - 1));
    }

    public KafkaEndpoint endpoint() {
        return new KafkaEndpoint(bootstrapServers, topic, Optional.of(checkpointId), part);
    }

    public KafkaSinkOptions withChunkBytes(int bytes) {
        return new KafkaSinkOptions(bootstrapServers, topic, checkpointId, bytes, bufferMemory, transactions,
                transactionalId, partitionsIfCreated, producerProperties, progress, part);
    }

    public KafkaSinkOptions withBufferMemory(long bytes) {
        return new KafkaSinkOptions(bootstrapServers, topic, checkpointId, chunkBytes, bytes, transactions,
                transactionalId, partitionsIfCreated, producerProperties, progress, part);
    }

    public KafkaSinkOptions withTransactions(Transactions mode) {
        return new KafkaSinkOptions(bootstrapServers, topic, checkpointId, chunkBytes, bufferMemory, mode,
                transactionalId, partitionsIfCreated, producerProperties, progress, part);
    }

    public KafkaSinkOptions withTransactionalId(String id) {
        return new KafkaSinkOptions(bootstrapServers, topic, checkpointId, chunkBytes, bufferMemory, transactions, id,
                partitionsIfCreated, producerProperties, progress, part);
    }

    public KafkaSinkOptions withPartitionsIfCreated(int partitions) {
        return new KafkaSinkOptions(bootstrapServers, topic, checkpointId, chunkBytes, bufferMemory, transactions,
                transactionalId, partitions, producerProperties, progress, part);
    }

    public KafkaSinkOptions withProducerProperties(Map<String, Object> properties) {
        return new KafkaSinkOptions(bootstrapServers, topic, checkpointId, chunkBytes, bufferMemory, transactions,
                transactionalId, partitionsIfCreated, properties, progress, part);
    }

    public KafkaSinkOptions withProgress(Progress p) {
        return new KafkaSinkOptions(bootstrapServers, topic, checkpointId, chunkBytes, bufferMemory, transactions,
                transactionalId, partitionsIfCreated, producerProperties, p, part);
    }
}
