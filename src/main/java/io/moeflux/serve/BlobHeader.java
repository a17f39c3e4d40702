package io.moeflux.serve;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.json.JsonMapper;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.TensorInfo;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;

/**
 * The JSON header of one safetensors blob, validated strictly: known dtypes, sizes equal to
 * numel * dtype size, data offsets that tile the data section without holes or overlaps, no duplicate names.
 *
 * @param entries   the tensors in data-offset order
 * @param dataStart where the data section starts, from the blob's first byte ({@code 8 + header length})
 */
record BlobHeader(List<Entry> entries, long dataStart) {
    private static final ObjectMapper JSON = JsonMapper.builder().enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION).build();

    /** A tensor and its bytes {@code [begin, end)} relative to the data section. */
    record Entry(TensorInfo info, long begin, long end) {}

    /** Bytes of the data section, so the blob ends at {@code dataStart + dataLength()}. */
    long dataLength() {
        return entries.isEmpty() ? 0 : entries.getLast().end();
    }

    /** Parses the header bytes {@code [8, 8 + length)} of {@code blob}; {@code where} names the blob in errors. */
    static BlobHeader parse(MemorySegment blob, long length, String where) {
        JsonNode root;
        try {
            root = JSON.readTree(blob.asSlice(8, length).toArray(ValueLayout.JAVA_BYTE));
        } catch (JsonProcessingException e) {
            throw new MalformedUploadException(where + ": header is not valid JSON: " + e.getOriginalMessage());
        } catch (java.io.IOException e) {
            throw new MalformedUploadException(where + ": header is unreadable: " + e.getMessage(), e);
        }
        if (root == null || !root.isObject()) {
            throw new MalformedUploadException(where + ": header is not a JSON object");
        }
        List<Entry> entries = new ArrayList<>();
        for (Map.Entry<String, JsonNode> field : root.properties()) {
            if (field.getKey().equals("__metadata__")) {
                checkMetadata(field.getValue(), where);
            } else {
                entries.add(entry(field.getKey(), field.getValue(), where));
            }
        }
        entries.sort(Comparator.comparingLong(Entry::begin).thenComparingLong(Entry::end));
        long expected = 0;
        for (Entry e : entries) {
            if (e.begin() != expected) {
                throw new MalformedUploadException(where + ": tensor " + e.info().name() + " starts at data offset "
                        + e.begin() + ", expected " + expected + " (offsets must be contiguous, without holes or overlaps)");
            }
            expected = e.end();
        }
        return new BlobHeader(List.copyOf(entries), 8 + length);
    }

    private static void checkMetadata(JsonNode metadata, String where) {
        if (!metadata.isObject()) {
            throw new MalformedUploadException(where + ": __metadata__ is not a JSON object");
        }
        for (Map.Entry<String, JsonNode> f : metadata.properties()) {
            if (!f.getValue().isTextual()) {
                throw new MalformedUploadException(where + ": __metadata__ value of " + f.getKey() + " is not a string");
            }
        }
    }

    private static Entry entry(String name, JsonNode node, String where) {
        String what = where + ": tensor " + name;
        if (!node.isObject()) {
            throw new MalformedUploadException(what + ": entry is not a JSON object");
        }
        JsonNode dtypeNode = node.get("dtype");
        JsonNode shapeNode = node.get("shape");
        JsonNode offsets = node.get("data_offsets");
        if (dtypeNode == null || !dtypeNode.isTextual() || shapeNode == null || !shapeNode.isArray()
                || offsets == null || !offsets.isArray() || offsets.size() != 2) {
            throw new MalformedUploadException(what + ": needs \"dtype\", \"shape\" and two \"data_offsets\"");
        }
        DType dtype;
        try {
            dtype = DType.parse(dtypeNode.asText());
        } catch (IllegalArgumentException e) {
            throw new MalformedUploadException(what + ": " + e.getMessage());
        }
        long[] shape = new long[shapeNode.size()];
        for (int i = 0; i < shape.length; i++) {
            shape[i] = nonNegativeLong(shapeNode.get(i), what + ": shape");
        }
        long begin = nonNegativeLong(offsets.get(0), what + ": data_offsets");
        long end = nonNegativeLong(offsets.get(1), what + ": data_offsets");
        long size;
        try {
            size = Shapes.byteSize(dtype, shape);
        } catch (ArithmeticException e) {
            throw new MalformedUploadException(what + ": shape " + Shapes.format(shape) + " overflows");
        }
        if (end < begin || end - begin != size) {
            throw new MalformedUploadException(what + ": data_offsets [" + begin + ", " + end + "] hold "
                    + (end - begin) + " bytes, but " + dtype + Shapes.format(shape) + " needs " + size);
        }
        return new Entry(new TensorInfo(name, dtype, shape), begin, end);
    }

    private static long nonNegativeLong(JsonNode n, String what) {
        if (n == null || !n.canConvertToExactIntegral() || !n.canConvertToLong() || n.asLong() < 0) {
            throw new MalformedUploadException(what + " holds " + n + ", expected a non-negative integer");
        }
        return n.asLong();
    }
}
