package io.moeflux.connect.safetensors;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.NullNode;
import io.moeflux.connect.HeaderTooLargeException;
import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.TensorInfo;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.ByteOrder;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CoderResult;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The safetensors file format, validated as strictly as huggingface/safetensors and written byte for
 * byte as its writer does.
 *
 * <pre>
 * u64 little-endian N | N bytes of UTF-8 JSON header | data
 * header: {"__metadata__": {str: str}?, name: {"dtype": D, "shape": [..], "data_offsets": [begin, end]}, ...}
 * </pre>
 * Offsets are relative to the data section, cover it contiguously from 0 without holes or overlap, and
 * the data section ends exactly at the end of the file.
 */
public final class SafetensorsFormat {
    private SafetensorsFormat() {}

    /** The reference implementation refuses larger headers; so do we, before allocating them. */
    public static final long MAX_HEADER_SIZE = 100_000_000;

    /**
     * The most tensors one header may list. Every tensor costs a few hundred bytes of heap while a
     * checkpoint is planned and converted, and a header within {@link #MAX_HEADER_SIZE} can list 1.6
     * million empty ones, more than a 512 MB heap holds; a whole Hy3-preview checkpoint has 47,138.
     */
    public static final int MAX_TENSORS = 500_000;

    /** The writer's order: descending dtype (enum order of the Rust crate), then name. */
    public static final Comparator<TensorInfo> FILE_ORDER =
            Comparator.comparing(TensorInfo::dtype, Comparator.reverseOrder()).thenComparing(TensorInfo::name);

    /**
     * Tensor names are the header's field names, every one different: the parser's table of field
     * names, made for the few names a document repeats, would only grow (to hundreds of MB of
     * humongous arrays for the 47,138 names of Hy3-preview), so it is off.
     */
    private static final ObjectMapper JSON = JsonMapper.builder(JsonFactory.builder()
                    .disable(JsonFactory.Feature.CANONICALIZE_FIELD_NAMES)
                    .disable(JsonFactory.Feature.INTERN_FIELD_NAMES)
                    .build())
            .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION).build();

    /** One tensor of a header: data bytes {@code [begin, end)} of the data section. */
    public record Entry(String name, DType dtype, long[] shape, long begin, long end) {
        public TensorInfo info() {
            return new TensorInfo(name, dtype, shape);
        }

        public long byteSize() {
            return end - begin;
        }
    }

    /**
     * A validated header.
     *
     * @param entries    in data order
     * @param dataStart  file offset of the data section ({@code 8 + N})
     * @param dataLength bytes of the data section
     */
    public record Header(List<Entry> entries, long dataStart, long dataLength, Map<String, String> metadata) {
        public long totalSize() {
            return dataStart + dataLength;
        }
    }

    /**
     * Reads the header length from the first 8 bytes; {@code available} is how many bytes the file or
     * blob has, when known (else -1).
     */
    public static long headerLength(ByteBuffer first8, long available, String where) {
        if (first8.remaining() < 8) {
            throw new InvalidCheckpointException(where + ": shorter than the 8-byte header length");
        }
        long n = first8.duplicate().order(ByteOrder.LITTLE_ENDIAN).getLong();
        if (n < 0 || n > MAX_HEADER_SIZE) {
            // Most often the first 8 bytes of something else (text, another format): bad input, not a large header.
            throw new InvalidCheckpointException(where + ": not a safetensors file, or one whose header is beyond the format's"
                    + " 100 MB limit: its first 8 bytes give a header length of " + Long.toUnsignedString(n));
        }
        if (n < 2) {
            throw new InvalidCheckpointException(where + ": header length " + n + " cannot hold a JSON object");
        }
        if (available >= 0 && 8 + n > available) {
            throw new InvalidCheckpointException(where + ": header length " + n + " runs past the end ("
                    + available + " bytes)");
        }
        return n;
    }

    /**
     * Validates a header's JSON bytes. With {@code totalSize >= 0} the data section must end exactly
     * there; with -1 (a stream whose length is not known yet) the caller checks that itself.
     */
    public static Header parseHeader(byte[] json, long totalSize, String where) {
        requireUtf8(json, where);
        if (json.length == 0 || json[0] != '{') {
            throw new InvalidCheckpointException(where + ": header does not start with '{'");
        }
        Map<String, String> metadata = new LinkedHashMap<>();
        List<Entry> entries = new ArrayList<>();
        // Streamed entry by entry: a tree of the whole header would cost tens of times its size in heap.
        try (JsonParser p = JSON.createParser(json)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                throw new InvalidCheckpointException(where + ": header is not a JSON object");
            }
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                p.nextToken();
                JsonNode v = p.readValueAsTree();
                if (v == null) {
                    v = NullNode.getInstance();
                }
                if (name.equals("__metadata__")) {
                    readMetadata(v, metadata, where);
                    continue;
                }
                if (entries.size() == MAX_TENSORS) {
                    throw new HeaderTooLargeException(where + ": header lists more than " + String.format(Locale.ROOT, "%,d", MAX_TENSORS)
                            + " tensors, the most one header may");
                }
                entries.add(entry(name, v, where));
            }
        } catch (JsonProcessingException e) {
            throw new InvalidCheckpointException(where + ": header is not valid JSON: " + problem(e));
        } catch (IOException e) {
            throw new UncheckedIOException("reading a header from memory", e);
        }
        entries.sort(Comparator.comparingLong(Entry::begin).thenComparingLong(Entry::end));
        long pos = 0;
        for (Entry e : entries) {
            if (e.begin() != pos) {
                throw new InvalidCheckpointException(where + ": tensor " + e.name() + " starts at data offset "
                        + e.begin() + " but the previous tensor ends at " + pos + (e.begin() > pos ? " (hole)" : " (overlap)"));
            }
            pos = e.end();
        }
        long dataStart = 8L + json.length;
        if (totalSize >= 0 && dataStart + pos != totalSize) {
            throw new InvalidCheckpointException(where + ": tensors end at byte " + (dataStart + pos) + " but the file has "
                    + totalSize + " bytes" + (dataStart + pos < totalSize ? " (trailing bytes)" : " (truncated)"));
        }
        return new Header(List.copyOf(entries), dataStart, pos, Map.copyOf(metadata));
    }

    private static void readMetadata(JsonNode v, Map<String, String> metadata, String where) {
        if (!v.isObject()) {
            throw new InvalidCheckpointException(where + ": __metadata__ is not an object");
        }
        v.fields().forEachRemaining(m -> {
            if (!m.getValue().isTextual()) {
                throw new InvalidCheckpointException(where + ": __metadata__ value of \"" + m.getKey() + "\" is not a string");
            }
            metadata.put(m.getKey(), m.getValue().asText());
        });
    }

    /** Valid UTF-8 throughout, checked a buffer at a time rather than by decoding the header into one string. */
    private static void requireUtf8(byte[] json, String where) {
        CharsetDecoder decoder = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        ByteBuffer in = ByteBuffer.wrap(json);
        CharBuffer out = CharBuffer.allocate(8192);
        CoderResult r;
        do {
            out.clear();
            r = decoder.decode(in, out, true);
            if (r.isError()) {
                throw new InvalidCheckpointException(where + ": header is not valid UTF-8");
            }
        } while (r.isOverflow());
        out.clear();
        if (decoder.flush(out).isError()) {
            throw new InvalidCheckpointException(where + ": header is not valid UTF-8");
        }
    }

    /** What the JSON parser found wrong, without its advice on parser settings. */
    static String problem(JsonProcessingException e) {
        String m = String.valueOf(e.getOriginalMessage());
        int advice = m.indexOf(": enable ");
        return (advice > 0 ? m.substring(0, advice) : m.lines().findFirst().orElse(m))
                + (e.getLocation() != null && e.getLocation().getByteOffset() >= 0
                        ? " (at byte " + e.getLocation().getByteOffset() + ")" : "");
    }

    private static Entry entry(String name, JsonNode v, String where) {
        String at = where + ": tensor " + name;
        if (!v.isObject()) {
            throw new InvalidCheckpointException(at + ": entry is not an object");
        }
        JsonNode dtypeNode = v.get("dtype");
        JsonNode shapeNode = v.get("shape");
        JsonNode offsetsNode = v.get("data_offsets");
        if (dtypeNode == null || !dtypeNode.isTextual()) {
            throw new InvalidCheckpointException(at + ": missing or non-string dtype");
        }
        dtype(dtypeNode.asText(), at);
        if (shapeNode == null || !shapeNode.isArray()) {
            throw new InvalidCheckpointException(at + ": missing or non-array shape");
        }
        long[] shape = new long[shapeNode.size()];
        for (int i = 0; i < shape.length; i++) {
            JsonNode d = shapeNode.get(i);
            if (!d.isIntegralNumber() || !d.canConvertToLong() || d.asLong() < 0) {
                throw new InvalidCheckpointException(at + ": shape " + shapeNode + " is not a list of non-negative integers");
            }
            shape[i] = d.asLong();
        }
        if (offsetsNode == null || !offsetsNode.isArray() || offsetsNode.size() != 2
                || !offsetsNode.get(0).isIntegralNumber() || !offsetsNode.get(1).isIntegralNumber()
                || !offsetsNode.get(0).canConvertToLong() || !offsetsNode.get(1).canConvertToLong()) {
            throw new InvalidCheckpointException(at + ": data_offsets must be two integers");
        }
        return entry(name, dtypeNode.asText(), shape, offsetsNode.get(0).asLong(), offsetsNode.get(1).asLong(), at);
    }

    private static DType dtype(String name, String at) {
        try {
            return DType.parse(name);
        } catch (IllegalArgumentException e) {
            throw new InvalidCheckpointException(at + ": " + e.getMessage());
        }
    }

    /** The checks every entry gets once its fields have the right types; {@code at} names the tensor. */
    private static Entry entry(String name, String dtypeName, long[] shape, long begin, long end, String at) {
        DType dtype = dtype(dtypeName, at);
        if (begin < 0 || end < begin) {
            throw new InvalidCheckpointException(at + ": data_offsets [" + begin + ", " + end + "] are invalid");
        }
        long expected;
        try {
            expected = Shapes.byteSize(dtype, shape);
        } catch (ArithmeticException e) {
            throw new InvalidCheckpointException(at + ": shape " + Shapes.format(shape) + " overflows");
        }
        if (end - begin != expected) {
            throw new InvalidCheckpointException(at + ": " + dtype + Shapes.format(shape) + " needs " + expected
                    + " bytes but data_offsets [" + begin + ", " + end + "] hold " + (end - begin));
        }
        return new Entry(name, dtype, shape, begin, end);
    }

    /** Tensors in the order the safetensors writer lays them out. */
    public static List<TensorInfo> fileOrder(Collection<TensorInfo> tensors) {
        List<TensorInfo> sorted = new ArrayList<>(tensors);
        sorted.sort(FILE_ORDER);
        return sorted;
    }

    /**
     * The 8-byte length and JSON header of a file holding {@code inFileOrder} (already in
     * {@link #fileOrder} order), exactly as huggingface/safetensors writes it: compact JSON,
     * {@code __metadata__} first, space-padded to a multiple of 8.
     */
    public static byte[] encodeHeader(List<TensorInfo> inFileOrder) {
        StringBuilder sb = new StringBuilder(64 + inFileOrder.size() * 96);
        sb.append("{\"__metadata__\":{\"format\":\"pt\"}");
        long offset = 0;
        for (TensorInfo t : inFileOrder) {
            sb.append(',');
            appendJsonString(sb, t.name());
            sb.append(":{\"dtype\":\"").append(t.dtype().safetensorsName()).append("\",\"shape\":[");
            long[] shape = t.shape();
            for (int i = 0; i < shape.length; i++) {
                if (i > 0) {
                    sb.append(',');
                }
                sb.append(shape[i]);
            }
            long end = offset + t.byteSize();
            sb.append("],\"data_offsets\":[").append(offset).append(',').append(end).append("]}");
            offset = end;
        }
        sb.append('}');
        byte[] json = sb.toString().getBytes(StandardCharsets.UTF_8);
        int padded = (json.length + 7) / 8 * 8;
        ByteBuffer out = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(padded).put(json);
        while (out.hasRemaining()) {
            out.put((byte) ' ');
        }
        return out.array();
    }

    /** JSON string escaping as serde_json does it: short escapes, other controls as lowercase \\u00xx. */
    static void appendJsonString(StringBuilder sb, String s) {
        sb.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> sb.append("\\\"");
                case '\\' -> sb.append("\\\\");
                case '\n' -> sb.append("\\n");
                case '\r' -> sb.append("\\r");
                case '\t' -> sb.append("\\t");
                case '\b' -> sb.append("\\b");
                case '\f' -> sb.append("\\f");
                default -> {
                    if (c < 0x20) {
                        sb.append(String.format("\\u%04x", (int) c));
                    } else {
                        sb.append(c);
                    }
                }
            }
        }
        sb.append('"');
    }
}
