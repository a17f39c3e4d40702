package io.moeflux.connect.kafka;

import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.Box;
import io.moeflux.tensor.DType;
import io.moeflux.tensor.DenseTensor;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.SpillArea;
import io.moeflux.tensor.TensorInfo;
import java.io.ByteArrayOutputStream;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.zip.CRC32C;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.header.Headers;
import reactor.core.publisher.Mono;

/**
 * Turns the records of one checkpoint, from a set of partitions, back into tensors.
 *
 * <p>Chunks of one tensor arrive in order (one key, one partition, an idempotent producer), but
 * tensors interleave. A chunk seen again (a publisher that retried a whole publish) is dropped if its
 * checksum agrees with the first copy and is an error if not. The checkpoint is complete once every
 * partition in scope has delivered its commit record: in-partition order puts each partition's data
 * before its commit, so anything still missing then is lost, not late.
 *
 * <p>A checkpoint published in parts (one per rank) is read the same way, each piece being reassembled on
 * its own (a part may publish many pieces of one tensor, and parts publish pieces of the same tensors) and
 * handed out as a piece of its whole tensor; it is complete once every part's commit record has arrived
 * from every partition in scope.
 *
 * <p>Called by one thread at a time (records are processed one after the other); {@link #releaseAll}
 * may come from a cancelling thread, hence the locking.
 */
final class Reassembler {
    /**
     * A checkpoint published in {@code count} parts, whose tensors have these whole shapes (from every part's
     * manifest, see {@link PartedManifests}).
     */
    record Parts(int count, Map<String, TensorInfo> whole) {
        static Optional<Parts> of(TopicScanner.Found found) {
            return found.parts().map(n -> {
                Map<String, TensorInfo> byName = new HashMap<>();
                found.manifest().tensors().orElseThrow().forEach(t -> byName.put(t.name(), t));
                return new Parts(n, byName);
            });
        }
    }

    sealed interface Step {}

    record Emit(TensorEvent event) implements Step {}

    record Done() implements Step {}

    private static final Mono<Step> NOTHING = Mono.empty();

    private final String topic;
    private final String checkpoint;
    private final Set<Integer> partitions;
    private final ReassemblyBudget budget;
    private final SpillArea spill;
    private final Map<String, Entry> tensors = new LinkedHashMap<>();
    private final Map<Integer, ManifestParts> manifestParts = new HashMap<>();
    private final Map<Integer, WireFormat.Commit> commits = new TreeMap<>();
    private final Optional<Parts> parts;
    /** For a checkpoint in parts: each part's commit records, by partition. */
    private final Map<Integer, Map<Integer, WireFormat.Commit>> partCommits = new TreeMap<>();
    private Optional<WireFormat.Manifest> manifest = Optional.empty();
    private Optional<Map<String, TensorInfo>> manifestIndex = Optional.empty();
    private long completeTensors;
    private long completeBytes;
    private boolean done;

    /**
     * What a tensor counts against the memory budget: file-backed tensors count nothing. A from-hf
     * merge into a destination that takes whole tensors holds a layer's experts until its last one
     * arrives; were those counted, reading would wait for the merge and the merge for reading.
     */
    private long budgeted(long bytes) {
        return spill.isFileBacked(bytes) ? 0 : bytes;
    }

    Reassembler(String topic, String checkpoint, Set<Integer> partitions, ReassemblyBudget budget, SpillArea spill,
            Optional<Parts> parts) {
        this.topic = topic;
        this.checkpoint = checkpoint;
        this.partitions = Set.copyOf(partitions);
        this.budget = budget;
        this.spill = spill;
        this.parts = parts;
    }

    Reassembler(String topic, String checkpoint, Set<Integer> partitions, ReassemblyBudget budget, SpillArea spill) {
        this(topic, checkpoint, partitions, budget, spill, Optional.empty());
    }

    /** Processes one record; may wait for reassembly room; emits a tensor when its last chunk arrives. */
    Mono<Step> onRecord(ConsumerRecord<byte[], byte[]> record) {
        Headers h = record.headers();
        if (!WireFormat.text(h, WireFormat.CHECKPOINT).map(checkpoint::equals).orElse(false)
                || !partitions.contains(record.partition())) {
            return NOTHING;
        }
        return switch (WireFormat.typeOf(h)) {
            case WireFormat.DATA -> onChunk(record);
            // A checkpoint in parts is described by every part's manifest, which the reader has read before.
            case WireFormat.MANIFEST -> parts.isPresent() ? NOTHING : Mono.fromCallable(() -> onManifestPart(record)).then(NOTHING);
            case WireFormat.COMMIT -> Mono.fromCallable(() -> parts.isPresent() ? onPartCommit(record) : onCommit(record));
            default -> NOTHING;
        };
    }

    private String where(ConsumerRecord<?, ?> r) {
        return "checkpoint " + checkpoint + " on topic " + topic + " (partition " + r.partition() + ", offset "
                + r.offset() + ")";
    }

    private Mono<Step> onChunk(ConsumerRecord<byte[], byte[]> record) {
        return Mono.defer(() -> {
            Headers h = record.headers();
            String where = where(record);
            String name = WireFormat.required(h, WireFormat.TENSOR, where);
            Optional<WireFormat.PieceOf> piece = pieceOf(h, where + ", tensor " + name);
            String key = piece.map(p -> name + " " + p.part() + " " + WireFormat.shapeText(p.offsets())).orElse(name);
            String at = where + ", tensor " + name + piece.map(p -> " (part " + p.part() + ", piece at "
                    + WireFormat.shapeText(p.offsets()) + ")").orElse("");
            long index = WireFormat.requiredLong(h, WireFormat.CHUNK, at);
            long count = WireFormat.requiredLong(h, WireFormat.CHUNKS, at);
            long offset = WireFormat.requiredLong(h, WireFormat.OFFSET, at);
            long total = WireFormat.requiredLong(h, WireFormat.TENSOR_BYTES, at);
            String crc = WireFormat.required(h, WireFormat.CRC32C, at);
            byte[] value = record.value() == null ? new byte[0] : record.value();
            CRC32C actual = new CRC32C();
            actual.update(value);
            if (!WireFormat.crcText((int) actual.getValue()).equals(crc)) {
                return Mono.error(new KafkaCheckpointException(at + ": chunk " + index + " of " + count
                        + " has a bad checksum (CRC32C " + WireFormat.crcText((int) actual.getValue())
                        + ", header says " + crc + ")"));
            }
            Entry entry;
            synchronized (this) {
                entry = tensors.get(key);
            }
            if (entry != null) {
                return Mono.fromCallable(() -> accept(entry, record, index, count, offset, total, (int) actual.getValue(), at));
            }
            if (index != 0) {
                return Mono.error(new KafkaCheckpointException(at + ": chunk " + index + " of " + count
                        + " arrived but chunk 0 never did (chunks missing)"));
            }
            DType dtype = parseDtype(WireFormat.required(h, WireFormat.DTYPE, at), at);
            long[] shape = WireFormat.parseShape(WireFormat.required(h, WireFormat.SHAPE, at), at);
            if (Shapes.byteSize(dtype, shape) != total) {
                return Mono.error(new KafkaCheckpointException(at + ": " + dtype + Shapes.format(shape) + " has "
                        + Shapes.byteSize(dtype, shape) + " bytes but the chunk header says " + total));
            }
            if (piece.isPresent()) {
                checkPiece(name, dtype, shape, piece.get(), at);
            } else {
                checkAgainstManifest(name, dtype, shape, at);
            }
            return budget.reserve(budgeted(total)).then(Mono.fromCallable(() -> {
                Entry created = new Entry(name, dtype, shape, total, count, record.partition(), piece);
                synchronized (this) {
                    if (done) {
                        created.abandon();
                        throw new KafkaCheckpointException(at + ": reading was stopped");
                    }
                    tensors.put(key, created);
                }
                return accept(created, record, index, count, offset, total, (int) actual.getValue(), at);
            }));
        });
    }

    private static DType parseDtype(String text, String at) {
        try {
            return DType.parse(text);
        } catch (IllegalArgumentException e) {
            throw new KafkaCheckpointException(at + ": unknown dtype '" + text + "'");
        }
    }

    /** The part and offsets of a chunk of a checkpoint in parts; refused in a whole checkpoint and required in one in parts. */
    private Optional<WireFormat.PieceOf> pieceOf(Headers h, String at) {
        Optional<String> part = WireFormat.text(h, WireFormat.PART);
        if (parts.isEmpty()) {
            if (part.isPresent()) {
                throw new KafkaCheckpointException(at + ": a chunk of part " + part.get() + " in a checkpoint not published"
                        + " in parts");
            }
            return Optional.empty();
        }
        int p = (int) WireFormat.requiredLong(h, WireFormat.PART, at);
        if (p < 0 || p >= parts.get().count()) {
            throw new KafkaCheckpointException(at + ": part " + p + " of a checkpoint in " + parts.get().count() + " parts");
        }
        return Optional.of(new WireFormat.PieceOf(p, WireFormat.parseShape(WireFormat.required(h, WireFormat.OFFSETS, at), at)));
    }

    /** A piece must be of a tensor of the parts' manifests, of its type and inside its whole shape. */
    private void checkPiece(String name, DType dtype, long[] shape, WireFormat.PieceOf piece, String at) {
        TensorInfo whole = parts.orElseThrow().whole().get(name);
        if (whole == null) {
            throw new KafkaCheckpointException(at + ": tensor is in no part's manifest");
        }
        if (whole.dtype() != dtype || piece.offsets().length != shape.length
                || !new Box(piece.offsets(), shape).fitsIn(whole.shape())) {
            throw new KafkaCheckpointException(at + ": a " + dtype + Shapes.format(shape) + " piece at "
                    + WireFormat.shapeText(piece.offsets()) + " does not fit " + whole);
        }
    }

    private synchronized void checkAgainstManifest(String name, DType dtype, long[] shape, String at) {
        manifestIndex.ifPresent(index -> {
            TensorInfo actual = new TensorInfo(name, dtype, shape);
            TensorInfo expected = index.get(name);
            if (expected == null) {
                throw new KafkaCheckpointException(at + ": tensor is not in the manifest");
            }
            if (!expected.equals(actual)) {
                throw new KafkaCheckpointException(at + ": chunk says " + actual + " but the manifest says " + expected);
            }
        });
    }

    private synchronized Step accept(Entry e, ConsumerRecord<byte[], byte[]> record, long index, long count, long offset,
            long total, int crc, String at) {
        if (count != e.count || total != e.total) {
            throw new KafkaCheckpointException(at + ": chunk " + index + " says " + count + " chunks of " + total
                    + " bytes, earlier chunks said " + e.count + " of " + e.total);
        }
        if (index < e.next) {
            if (e.crcs[(int) index] != crc || e.offsets[(int) index] != offset) {
                throw new KafkaCheckpointException(at + ": chunk " + index + " of " + count
                        + " arrived again and disagrees with its first copy (CRC32C " + WireFormat.crcText(crc)
                        + " vs " + WireFormat.crcText(e.crcs[(int) index]) + ")");
            }
            return null;
        }
        if (index > e.next) {
            throw new KafkaCheckpointException(at + ": chunk " + index + " of " + count + " arrived after chunk "
                    + (e.next - 1) + "; chunk " + e.next + " is missing");
        }
        byte[] value = record.value() == null ? new byte[0] : record.value();
        if (offset != e.filled || e.filled + value.length > e.total) {
            throw new KafkaCheckpointException(at + ": chunk " + index + " covers bytes [" + offset + ", "
                    + (offset + value.length) + ") but bytes [0, " + e.filled + ") of " + e.total + " are filled");
        }
        MemorySegment.copy(value, 0, e.segment, ValueLayout.JAVA_BYTE, offset, value.length);
        e.running.update(value);
        e.crcs[(int) index] = crc;
        e.offsets[(int) index] = offset;
        e.filled += value.length;
        e.next++;
        if (e.next < e.count) {
            return null;
        }
        if (e.filled != e.total) {
            throw new KafkaCheckpointException(at + ": all " + count + " chunks arrived with " + e.filled + " of "
                    + e.total + " bytes");
        }
        String expectedCrc = WireFormat.required(record.headers(), WireFormat.TENSOR_CRC32C, at);
        String wholeCrc = WireFormat.crcText((int) e.running.getValue());
        if (!expectedCrc.equals(wholeCrc)) {
            throw new KafkaCheckpointException(at + ": the reassembled tensor has CRC32C " + wholeCrc
                    + " but its last chunk says " + expectedCrc);
        }
        completeTensors++;
        completeBytes += e.total;
        if (e.piece.isPresent()) {
            long[] whole = parts.orElseThrow().whole().get(e.name).shape();
            return new Emit(TensorEvent.piece(e.name, whole, e.piece.get().offsets(), e.handOut()));
        }
        return new Emit(new TensorEvent(e.name, e.handOut()));
    }

    private synchronized Step onManifestPart(ConsumerRecord<byte[], byte[]> record) {
        if (manifest.isPresent()) {
            return null;
        }
        String where = where(record);
        int index = (int) WireFormat.requiredLong(record.headers(), WireFormat.CHUNK, where);
        int count = (int) WireFormat.requiredLong(record.headers(), WireFormat.CHUNKS, where);
        ManifestParts parts = manifestParts.computeIfAbsent(record.partition(), p -> new ManifestParts(count));
        if (index == 0) {
            parts.restart(count);
        }
        if (index != parts.next) {
            return null;
        }
        parts.bytes.writeBytes(record.value());
        parts.next++;
        if (parts.next == parts.count) {
            manifest = Optional.of(WireFormat.parseManifest(parts.bytes.toByteArray(), where));
            manifestIndex = manifest.get().tensors().map(list -> {
                Map<String, TensorInfo> byName = new HashMap<>();
                list.forEach(t -> byName.put(t.name(), t));
                return byName;
            });
            manifestParts.clear();
        }
        return null;
    }

    private synchronized Step onCommit(ConsumerRecord<byte[], byte[]> record) {
        String where = where(record);
        WireFormat.Commit commit = WireFormat.parseCommit(record.value(), where);
        commits.putIfAbsent(record.partition(), commit);
        if (!commits.keySet().containsAll(partitions)) {
            return null;
        }
        for (Entry e : tensors.values()) {
            if (!e.isComplete()) {
                throw new KafkaCheckpointException("checkpoint " + checkpoint + " on topic " + topic + ", tensor "
                        + e.name + " (partition " + e.partition + "): chunk " + e.next + " of " + e.count
                        + " is missing (the commit records came and it did not)");
            }
        }
        for (int p : partitions) {
            WireFormat.Commit c = commits.get(p);
            long here = tensors.values().stream().filter(e -> e.partition == p).count();
            if (here != c.partitionTensors()) {
                throw new KafkaCheckpointException("checkpoint " + checkpoint + " on topic " + topic + ", partition "
                        + p + ": the commit record says " + c.partitionTensors() + " tensors but " + here
                        + " arrived" + missingNames());
            }
        }
        if (partitions.size() == commit.partitions()
                && (completeTensors != commit.tensors() || completeBytes != commit.bytes())) {
            throw new KafkaCheckpointException("checkpoint " + checkpoint + " on topic " + topic
                    + ": the commit record says " + commit.tensors() + " tensors of " + commit.bytes() + " bytes but "
                    + completeTensors + " tensors of " + completeBytes + " bytes arrived" + missingNames());
        }
        done = true;
        return new Done();
    }

    /**
     * A part's commit record: the checkpoint is complete once every part's has come from every partition in
     * scope; then every piece must be whole and each part's counts must match what arrived of it.
     */
    private synchronized Step onPartCommit(ConsumerRecord<byte[], byte[]> record) {
        String where = where(record);
        WireFormat.Commit commit = WireFormat.parseCommit(record.value(), where);
        int count = parts.orElseThrow().count();
        if (commit.part().isEmpty() || commit.part().get().parts() != count) {
            throw new KafkaCheckpointException(where + ": a commit record that is not of one of the " + count
                    + " parts of the checkpoint");
        }
        partCommits.computeIfAbsent(commit.part().get().part(), p -> new TreeMap<>()).putIfAbsent(record.partition(), commit);
        for (int p = 0; p < count; p++) {
            if (!partCommits.getOrDefault(p, Map.of()).keySet().containsAll(partitions)) {
                return null;
            }
        }
        for (Entry e : tensors.values()) {
            if (!e.isComplete()) {
                throw new KafkaCheckpointException("checkpoint " + checkpoint + " on topic " + topic + ", tensor "
                        + e.name + " (part " + e.piece.orElseThrow().part() + ", partition " + e.partition + "): chunk "
                        + e.next + " of " + e.count + " is missing (the commit records came and it did not)");
            }
        }
        for (var byPart : partCommits.entrySet()) {
            int part = byPart.getKey();
            long[] pieces = {0, 0};
            for (var c : byPart.getValue().entrySet()) {
                long here = tensors.values().stream()
                        .filter(e -> e.partition == c.getKey() && e.piece.orElseThrow().part() == part).count();
                if (here != c.getValue().partitionTensors()) {
                    throw new KafkaCheckpointException("checkpoint " + checkpoint + " on topic " + topic + ", part " + part
                            + ", partition " + c.getKey() + ": the commit record says " + c.getValue().partitionTensors()
                            + " pieces but " + here + " arrived");
                }
            }
            for (Entry e : tensors.values()) {
                if (e.piece.orElseThrow().part() == part) {
                    pieces[0]++;
                    pieces[1] += e.total;
                }
            }
            WireFormat.Commit any = byPart.getValue().values().iterator().next();
            if (partitions.size() == any.partitions() && (pieces[0] != any.tensors() || pieces[1] != any.bytes())) {
                throw new KafkaCheckpointException("checkpoint " + checkpoint + " on topic " + topic + ", part " + part
                        + ": the commit record says " + any.tensors() + " pieces of " + any.bytes() + " bytes but "
                        + pieces[0] + " pieces of " + pieces[1] + " bytes arrived");
            }
        }
        done = true;
        return new Done();
    }

    private String missingNames() {
        return manifest.flatMap(WireFormat.Manifest::tensors)
                .map(list -> list.stream().map(TensorInfo::name).filter(n -> !tensors.containsKey(n)).limit(5).toList())
                .filter(l -> !l.isEmpty())
                .map(l -> "; missing e.g. " + l)
                .orElse("");
    }

    /** What has arrived so far, for error messages. */
    synchronized String state() {
        List<String> partial = tensors.values().stream().filter(e -> !e.isComplete()).limit(3)
                .map(e -> e.name + " (" + e.next + " of " + e.count + " chunks)").toList();
        String committed = parts.isPresent()
                ? ", commit records from parts " + partCommits.keySet() + " of " + parts.get().count()
                : ", commit records from partitions " + commits.keySet() + " of " + new TreeSet<>(partitions);
        return completeTensors + (parts.isPresent() ? " pieces" : " tensors") + " complete"
                + (partial.isEmpty() ? "" : ", in progress: " + partial) + committed;
    }

    /** Frees tensors still being reassembled (on complete, error and cancel). */
    synchronized void releaseAll() {
        done = true;
        tensors.values().forEach(Entry::abandon);
    }

    private static final class ManifestParts {
        int count;
        int next;
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();

        ManifestParts(int count) {
            this.count = count;
        }

        void restart(int newCount) {
            count = newCount;
            next = 0;
            bytes = new ByteArrayOutputStream();
        }
    }

    /** One tensor: while in progress it owns its buffer; once handed out only its checksums remain. */
    private final class Entry {
        final String name;
        final DType dtype;
        final long[] shape;
        final long total;
        final long count;
        final int partition;
        /** For a checkpoint in parts, the part this piece came from and where it starts. */
        final Optional<WireFormat.PieceOf> piece;
        final int[] crcs;
        final long[] offsets;
        final CRC32C running = new CRC32C();
        DenseTensor buffer;
        MemorySegment segment;
        long next;
        long filled;

        Entry(String name, DType dtype, long[] shape, long total, long count, int partition, Optional<WireFormat.PieceOf> piece) {
            if (count < 1 || count > Integer.MAX_VALUE - 8) {
                throw new KafkaCheckpointException("tensor " + name + ": implausible chunk count " + count);
            }
            this.name = name;
            this.dtype = dtype;
            this.shape = shape;
            this.total = total;
            this.count = count;
            this.partition = partition;
            this.piece = piece;
            this.crcs = new int[(int) count];
            this.offsets = new long[(int) count];
            // Large tensors go to unlinked file mappings (page cache the kernel can evict), small ones
            // off-heap; either way released on whichever thread the sink finishes with them.
            this.buffer = spill.allocate(dtype, shape);
            this.segment = buffer.data();
        }

        boolean isComplete() {
            return next == count;
        }

        DenseTensor handOut() {
            DenseTensor owned = buffer;
            buffer = null;
            MemorySegment data = segment;
            segment = null;
            budget.handedOut(budgeted(total));
            return new DenseTensor(dtype, shape, data, () -> {
                owned.release();
                budget.released(budgeted(total));
            });
        }

        void abandon() {
            if (buffer != null) {
                buffer.release();
                buffer = null;
                segment = null;
                budget.abandoned(budgeted(total));
            }
        }
    }
}
