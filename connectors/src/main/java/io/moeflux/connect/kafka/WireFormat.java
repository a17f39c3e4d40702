package io.moeflux.connect.kafka;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.TensorInfo;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HexFormat;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.AbstractRecords;
import org.apache.kafka.common.record.CompressionType;
import org.apache.kafka.common.record.RecordBatch;

/**
 * The records a checkpoint travels in on a topic (wire-format.md in this package documents them for other languages).
 *
 * <p>Every record carries {@link #TYPE} and {@link #CHECKPOINT} headers; all header values are UTF-8
 * text. A checkpoint is: manifest parts (to every partition), tensor chunks (keyed by
 * {@link #partitionKey}), then a commit record (to every partition). Readers ignore record types they
 * do not know, so {@code segment} records of a scaled-out conversion pass unnoticed.
 */
final class WireFormat {
    private WireFormat() {}

    /** What this build writes; it reads this and every earlier version ({@link #READABLE}). */
    static final String FORMAT = "moeflux-kafka/2";
    static final Set<String> READABLE = Set.of("moeflux-kafka/1", FORMAT);

    static final String TYPE = "moeflux.type";
    static final String CHECKPOINT = "moeflux.checkpoint";
    static final String TENSOR = "moeflux.tensor";
    static final String DTYPE = "moeflux.dtype";
    static final String SHAPE = "moeflux.shape";
    static final String CHUNK = "moeflux.chunk";
    static final String CHUNKS = "moeflux.chunks";
    static final String OFFSET = "moeflux.offset";
    static final String TENSOR_BYTES = "moeflux.tensor-bytes";
    static final String CRC32C = "moeflux.crc32c";
    static final String TENSOR_CRC32C = "moeflux.tensor-crc32c";
    /** Version 2, a checkpoint published in parts: the part a chunk belongs to. */
    static final String PART = "moeflux.part";
    /** Version 2, a checkpoint published in parts: where the chunk's piece starts in its whole tensor. */
    static final String OFFSETS = "moeflux.offsets";

    static final String MANIFEST = "manifest";
    static final String DATA = "chunk";
    static final String COMMIT = "commit";
    static final String SEGMENT = "segment";

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Pattern LAYER = Pattern.compile("^(?:model\\.)?(?:language_model\\.)?layers\\.(\\d+)\\.");
    private static final Pattern CHECKPOINT_ID = Pattern.compile("[A-Za-z0-9._:\\-]{1,200}");

    static String checkCheckpointId(String id) {
        if (!CHECKPOINT_ID.matcher(id).matches()) {
            throw new IllegalArgumentException("invalid checkpoint id '" + id
                    + "': use 1 to 200 letters, digits, '.', '_', ':' or '-'");
        }
        return id;
    }

    /**
     * The record key of a tensor's chunks: {@code ID/layers.N} for tensors of layer N (whatever their
     * prefix), {@code ID/NAME} otherwise. So all chunks of all tensors of one layer share a partition,
     * which lets a consumer group convert whole layers (the expert merge needs every expert of a layer).
     */
    static String partitionKey(String checkpoint, String tensor) {
        Matcher m = LAYER.matcher(tensor);
        return checkpoint + "/" + (m.find() ? "layers." + m.group(1) : tensor);
    }

    /** The key of manifest, commit and segment records, which go to explicit partitions. */
    static String controlKey(String checkpoint) {
        return checkpoint + "/";
    }

    static Header header(String name, String value) {
        return new RecordHeader(name, value.getBytes(StandardCharsets.UTF_8));
    }

    static Optional<String> text(Headers headers, String name) {
        Header h = headers.lastHeader(name);
        return h == null ? Optional.empty() : Optional.of(new String(h.value(), StandardCharsets.UTF_8));
    }

    static String required(Headers headers, String name, String where) {
        return text(headers, name).orElseThrow(() -> new KafkaCheckpointException(where + ": header " + name + " is missing"));
    }

    static long requiredLong(Headers headers, String name, String where) {
        String v = required(headers, name, where);
        try {
            return Long.parseLong(v);
        } catch (NumberFormatException e) {
            throw new KafkaCheckpointException(where + ": header " + name + " is not a number: '" + v + "'");
        }
    }

    static String crcText(int crc) {
        return HexFormat.of().toHexDigits(crc);
    }

    static String shapeText(long[] shape) {
        StringBuilder b = new StringBuilder("[");
        for (int i = 0; i < shape.length; i++) {
            b.append(i == 0 ? "" : ",").append(shape[i]);
        }
        return b.append(']').toString();
    }

    static long[] parseShape(String text, String where) {
        try {
            JsonNode node = JSON.readTree(text);
            if (!node.isArray()) {
                throw new KafkaCheckpointException(where + ": shape '" + text + "' is not a JSON array");
            }
            long[] shape = new long[node.size()];
            for (int i = 0; i < shape.length; i++) {
                if (!node.get(i).canConvertToLong() || node.get(i).asLong() < 0) {
                    throw new KafkaCheckpointException(where + ": shape '" + text + "' has a bad dimension");
                }
                shape[i] = node.get(i).asLong();
            }
            return shape;
        } catch (IOException e) {
            throw new KafkaCheckpointException(where + ": shape '" + text + "' is not JSON");
        }
    }

    /** The headers of chunk {@code index}; the whole tensor's CRC only on the last chunk (only then is it known). */
    static List<Header> chunkHeaders(String checkpoint, String tensor, DType dtype, long[] shape, long index, long count,
            long offset, long tensorBytes, int chunkCrc, Optional<Integer> tensorCrc, Optional<PieceOf> piece) {
        List<Header> h = new ArrayList<>(13);
        h.add(header(TYPE, DATA));
        h.add(header(CHECKPOINT, checkpoint));
        h.add(header(TENSOR, tensor));
        h.add(header(DTYPE, dtype.name()));
        h.add(header(SHAPE, shapeText(shape)));
        h.add(header(CHUNK, Long.toString(index)));
        h.add(header(CHUNKS, Long.toString(count)));
        h.add(header(OFFSET, Long.toString(offset)));
        h.add(header(TENSOR_BYTES, Long.toString(tensorBytes)));
        h.add(header(CRC32C, crcText(chunkCrc)));
        tensorCrc.ifPresent(c -> h.add(header(TENSOR_CRC32C, crcText(c))));
        piece.ifPresent(p -> {
            h.add(header(PART, Integer.toString(p.part())));
            h.add(header(OFFSETS, shapeText(p.offsets())));
        });
        return h;
    }

    /**
     * Where a chunk's tensor sits in a checkpoint published in parts: the part that published it, and where
     * this piece starts in the whole tensor (its shape is the chunk's {@code moeflux.shape}).
     */
    record PieceOf(int part, long[] offsets) {}

    /**
     * How many tensor bytes fit in one chunk record of at most {@code recordBytes}, as Kafka counts a
     * record against {@code max.request.size}: key, headers and batch overhead included. Computed with
     * every number at the width of the tensor's byte count, which bounds all of them.
     */
    static int payloadPerChunk(String checkpoint, TensorInfo info, int recordBytes) {
        long widest = Math.max(info.byteSize(), 1);
        long[] widestOffsets = new long[info.shape().length];
        java.util.Arrays.fill(widestOffsets, Long.MAX_VALUE);
        List<Header> worst = chunkHeaders(checkpoint, info.name(), info.dtype(), info.shape(), widest, widest, widest,
                widest, 0, Optional.of(0), Optional.of(new PieceOf(Integer.MAX_VALUE, widestOffsets)));
        byte[] key = partitionKey(checkpoint, info.name()).getBytes(StandardCharsets.UTF_8);
        int overhead = AbstractRecords.estimateSizeInBytesUpperBound(RecordBatch.CURRENT_MAGIC_VALUE, CompressionType.NONE,
                key, new byte[0], worst.toArray(Header[]::new));
        // The value's length prefix grows from one byte (empty) to at most five.
        int payload = recordBytes - overhead - 4;
        if (payload < 1024) {
            throw new IllegalArgumentException("chunk size " + recordBytes + " leaves only " + payload
                    + " bytes for data of tensor " + info.name() + " after " + overhead + " bytes of framing");
        }
        return payload;
    }

    static String typeOf(Headers headers) {
        return text(headers, TYPE).orElse("");
    }

    // --- manifest and commit bodies (JSON) ---

    /**
     * @param tensors for a part, its tensors as far as its pieces reach (the whole tensors are known only
     *                from every part's manifest)
     */
    static byte[] manifestJson(String checkpoint, Optional<List<TensorInfo>> tensors, Optional<byte[]> configJson,
            Optional<KafkaEndpoint.PartOf> part) {
        ObjectNode root = JSON.createObjectNode();
        root.put("format", FORMAT);
        root.put("checkpoint", checkpoint);
        part.ifPresent(p -> {
            root.put("part", p.part());
            root.put("parts", p.parts());
        });
        if (tensors.isPresent()) {
            ArrayNode list = root.putArray("tensors");
            for (TensorInfo t : tensors.get()) {
                ObjectNode n = list.addObject();
                n.put("name", t.name());
                n.put("dtype", t.dtype().name());
                ArrayNode s = n.putArray("shape");
                for (long d : t.shape()) {
                    s.add(d);
                }
            }
        } else {
            root.putNull("tensors");
        }
        configJson.ifPresentOrElse(c -> root.put("config_json", Base64.getEncoder().encodeToString(c)),
                () -> root.putNull("config_json"));
        return write(root);
    }

    /** A manifest; {@code part} when it is one part's, its tensors then as far as the part's pieces reach. */
    record Manifest(String checkpoint, Optional<List<TensorInfo>> tensors, Optional<byte[]> configJson,
            Optional<KafkaEndpoint.PartOf> part) {
        Manifest(String checkpoint, Optional<List<TensorInfo>> tensors, Optional<byte[]> configJson) {
            this(checkpoint, tensors, configJson, Optional.empty());
        }
    }

    static Manifest parseManifest(byte[] json, String where) {
        JsonNode root = read(json, where);
        requireReadable(root, "manifest", where);
        Optional<List<TensorInfo>> tensors = Optional.empty();
        JsonNode list = root.path("tensors");
        if (list.isArray()) {
            List<TensorInfo> infos = new ArrayList<>(list.size());
            for (JsonNode n : list) {
                String name = n.path("name").asText();
                try {
                    long[] shape = new long[n.path("shape").size()];
                    for (int i = 0; i < shape.length; i++) {
                        shape[i] = n.path("shape").get(i).asLong();
                    }
                    infos.add(new TensorInfo(name, DType.parse(n.path("dtype").asText()), shape));
                } catch (IllegalArgumentException e) {
                    throw new KafkaCheckpointException(where + ": manifest entry of tensor " + name + " is invalid: "
                            + e.getMessage());
                }
            }
            tensors = Optional.of(infos);
        }
        JsonNode config = root.path("config_json");
        Optional<byte[]> configJson = config.isTextual()
                ? Optional.of(Base64.getDecoder().decode(config.asText()))
                : Optional.empty();
        return new Manifest(root.path("checkpoint").asText(), tensors, configJson, partOf(root, where));
    }

    private static void requireReadable(JsonNode root, String what, String where) {
        if (!READABLE.contains(root.path("format").asText())) {
            throw new KafkaCheckpointException(where + ": " + what + " format '" + root.path("format").asText()
                    + "' is not one this version reads (" + String.join(", ", new java.util.TreeSet<>(READABLE)) + ")");
        }
    }

    /** The {@code part} and {@code parts} of a part's manifest or commit record; absent in a whole checkpoint's. */
    private static Optional<KafkaEndpoint.PartOf> partOf(JsonNode root, String where) {
        if (!root.has("part")) {
            return Optional.empty();
        }
        try {
            return Optional.of(new KafkaEndpoint.PartOf(root.path("part").asInt(-1), root.path("parts").asInt(-1)));
        } catch (IllegalArgumentException e) {
            throw new KafkaCheckpointException(where + ": " + e.getMessage());
        }
    }

    /**
     * The commit record of one partition.
     *
     * @param tensors          tensors in the whole checkpoint
     * @param bytes            tensor bytes in the whole checkpoint
     * @param partitions       partitions the checkpoint spans (a reader is done when it has a commit from each)
     * @param partitionTensors tensors whose chunks went to this record's partition
     * @param part             for a part's commit: which part; its counts are then the part's pieces
     */
    record Commit(String checkpoint, long tensors, long bytes, int partitions, long partitionTensors,
            Optional<KafkaEndpoint.PartOf> part) {
        Commit(String checkpoint, long tensors, long bytes, int partitions, long partitionTensors) {
            this(checkpoint, tensors, bytes, partitions, partitionTensors, Optional.empty());
        }
    }

    static byte[] commitJson(Commit c) {
        ObjectNode root = JSON.createObjectNode();
        root.put("format", FORMAT);
        root.put("checkpoint", c.checkpoint());
        c.part().ifPresent(p -> {
            root.put("part", p.part());
            root.put("parts", p.parts());
        });
        root.put("tensors", c.tensors());
        root.put("bytes", c.bytes());
        root.put("partitions", c.partitions());
        root.put("partition_tensors", c.partitionTensors());
        return write(root);
    }

    static Commit parseCommit(byte[] json, String where) {
        JsonNode root = read(json, where);
        requireReadable(root, "commit record", where);
        return new Commit(root.path("checkpoint").asText(), root.path("tensors").asLong(-1), root.path("bytes").asLong(-1),
                root.path("partitions").asInt(-1), root.path("partition_tensors").asLong(-1), partOf(root, where));
    }

    /**
     * What one consumer-group member converted from one source partition (scale-out conversions).
     *
     * @param sourcePartition  the source partition
     * @param sourcePartitions how many the source topic has
     * @param tensors          tensors published for it
     * @param bytes            their bytes
     * @param partitionTensors of those, how many went to each partition of the output topic
     */
    record Segment(String checkpoint, int sourcePartition, int sourcePartitions, long tensors, long bytes,
            long[] partitionTensors) {}

    static byte[] segmentJson(Segment s) {
        ObjectNode root = JSON.createObjectNode();
        root.put("format", FORMAT);
        root.put("checkpoint", s.checkpoint());
        root.put("source_partition", s.sourcePartition());
        root.put("source_partitions", s.sourcePartitions());
        root.put("tensors", s.tensors());
        root.put("bytes", s.bytes());
        ArrayNode counts = root.putArray("partition_tensors");
        for (long c : s.partitionTensors()) {
            counts.add(c);
        }
        return write(root);
    }

    static Segment parseSegment(byte[] json, String where) {
        JsonNode root = read(json, where);
        long[] counts = new long[root.path("partition_tensors").size()];
        for (int i = 0; i < counts.length; i++) {
            counts[i] = root.path("partition_tensors").get(i).asLong();
        }
        return new Segment(root.path("checkpoint").asText(), root.path("source_partition").asInt(-1),
                root.path("source_partitions").asInt(-1), root.path("tensors").asLong(-1), root.path("bytes").asLong(-1),
                counts);
    }

    private static byte[] write(JsonNode node) {
        try {
            return JSON.writeValueAsBytes(node);
        } catch (IOException e) {
            throw new IllegalStateException("cannot encode JSON", e);
        }
    }

    private static JsonNode read(byte[] json, String where) {
        try {
            return JSON.readTree(json);
        } catch (IOException e) {
            throw new KafkaCheckpointException(where + ": record body is not valid JSON: " + e.getMessage());
        }
    }
}
