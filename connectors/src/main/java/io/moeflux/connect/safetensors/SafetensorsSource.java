package io.moeflux.connect.safetensors;

import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.tensor.TensorInfo;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Stream;

/**
 * Reads a safetensors checkpoint: one file, a folder of shards with or without an index, or a sharded save
 * of many ranks (PyTorch DCP's {@code shard-R-model-K-of-N.safetensors}, see {@link ShardedSave}), whose
 * files hold pieces of tensors: it reads as one checkpoint whose tensors arrive in pieces.
 */
public final class SafetensorsSource {
    private SafetensorsSource() {}

    /**
     * Opens and validates every header (and the index, when there is one) before any data is read, so
     * a malformed checkpoint fails here, naming the file and tensor. Tensor data is mapped lazily, one
     * shard at a time, when {@link CheckpointSource#tensors()} is consumed.
     */
    public static CheckpointSource open(Path path) throws IOException {
        if (!Files.exists(path)) {
            throw new NoSuchFileException(path.toString());
        }
        Optional<ShardIndex> index = Files.isDirectory(path) ? index(path) : Optional.empty();
        List<Path> files = index.isPresent() ? index.get().shardFiles().stream().map(path::resolve).toList()
                : Files.isDirectory(path) ? unindexedShards(path) : List.of(path);
        List<Shard> shards = new ArrayList<>(files.size());
        for (Path f : files) {
            shards.add(readShard(f));
        }
        boolean sharded = shards.stream().anyMatch(s -> ShardedSave.isShard(s.header()));
        if (sharded) {
            return openShardedSave(path, shards);
        }
        Map<String, Path> seen = new HashMap<>();
        for (Shard s : shards) {
            for (SafetensorsFormat.Entry e : s.header().entries()) {
                Path other = seen.putIfAbsent(e.name(), s.file());
                if (other != null) {
                    throw new InvalidCheckpointException(s.file() + ": tensor " + e.name() + " also appears in " + other);
                }
            }
        }
        if (index.isPresent()) {
            Path indexFile = path.resolve(ShardIndex.FILE_NAME);
            index.get().checkAgainst(shards, indexFile);
            refuseUnindexed(path, files, indexFile);
        }
        Optional<byte[]> config = ModelConfigJson.readBytes(path);
        List<TensorInfo> infos = shards.stream().flatMap(s -> s.header().entries().stream()).map(SafetensorsFormat.Entry::info).toList();
        if (infos.isEmpty()) {
            // Converting it would commit an empty checkpoint and report success.
            throw new InvalidCheckpointException(path + ": holds no tensors");
        }
        return new MappedCheckpointSource(shards, new CheckpointDescriptor(Optional.of(infos), config));
    }

    /**
     * Every file must be a piece of the save: a plain safetensors file among them is refused, named, rather
     * than mixed in as whole tensors or left out.
     */
    private static CheckpointSource openShardedSave(Path path, List<Shard> plain) throws IOException {
        List<Shard> shards = new ArrayList<>(plain.size());
        for (Shard s : plain) {
            if (!ShardedSave.isShard(s.header())) {
                throw new InvalidCheckpointException(s.file() + ": a safetensors file without " + ShardedSave.SHARDING_INFO
                        + " among the files of a sharded save");
            }
            shards.add(new Shard(s.file(), s.size(), s.header(), ShardedSave.offsets(s)));
        }
        List<TensorInfo> infos = ShardedSave.wholeTensors(shards);
        if (infos.isEmpty()) {
            throw new InvalidCheckpointException(path + ": holds no tensors");
        }
        return new MappedCheckpointSource(shards, new CheckpointDescriptor(Optional.of(infos), ModelConfigJson.readBytes(path),
                ShardedSave.outputFiles(path, infos)));
    }

    /**
     * The files of a multi-part upload's parts as one checkpoint of pieces: each a rank's sharded-save file
     * (its pieces described by {@code DCP_SHARDING_INFO}) or a file of whole tensors. Every header is read
     * and checked here, naming the file and tensor.
     *
     * @param declared the checkpoint's tensors as declared up front: every piece must be of one of them, of
     *                 its type and inside its shape, and takes its whole shape from it; the files need not
     *                 cover them (a sink checks that at its commit). Without it the files are the whole
     *                 checkpoint, and every tensor's pieces must cover it exactly once, as for a sharded save
     * @param configJson the model's {@code config.json}, to describe the checkpoint with
     */
    public static CheckpointSource openPieces(List<Path> files, Optional<List<TensorInfo>> declared,
            Optional<byte[]> configJson) throws IOException {
        List<Shard> shards = readPieces(files);
        List<TensorInfo> infos = declared.isPresent() ? ShardedSave.checkAgainst(shards, declared.get())
                : ShardedSave.wholeTensors(shards);
        return new MappedCheckpointSource(shards, new CheckpointDescriptor(Optional.of(infos), configJson));
    }

    /**
     * One rank's share of a sharded save as a source: a rank's file (or a folder of files) whose pieces are
     * read without the other ranks', to publish as one part of a checkpoint. A part cannot know a tensor's
     * whole shape, so it describes its tensors as far as its pieces reach, and its events name that reach
     * as their whole shape; the reader of all parts makes them whole and checks their coverage.
     */
    public static CheckpointSource openPart(Path path) throws IOException {
        if (!Files.exists(path)) {
            throw new NoSuchFileException(path.toString());
        }
        List<Path> files = Files.isDirectory(path) ? unindexedShards(path) : List.of(path);
        List<Shard> shards = readPieces(files);
        List<TensorInfo> reach = PieceCoverage.reach(ShardedSave.pieces(shards));
        if (reach.isEmpty()) {
            throw new InvalidCheckpointException(path + ": holds no tensors");
        }
        return new MappedCheckpointSource(shards, new CheckpointDescriptor(Optional.of(reach), ModelConfigJson.readBytes(path)));
    }

    /**
     * Reads and checks the headers of files of pieces or whole tensors, as {@link #openPieces} does, without
     * relating them to each other (one part of many); returns the bytes of tensor data they hold.
     */
    public static long checkPieces(List<Path> files) throws IOException {
        return readPieces(files).stream().mapToLong(s -> s.header().dataLength()).sum();
    }

    private static List<Shard> readPieces(List<Path> files) throws IOException {
        List<Shard> shards = new ArrayList<>(files.size());
        for (Path f : files) {
            Shard s = readShard(f);
            Map<String, long[]> offsets = ShardedSave.isShard(s.header()) ? ShardedSave.offsets(s) : wholeTensorOffsets(s);
            shards.add(new Shard(s.file(), s.size(), s.header(), offsets));
        }
        return shards;
    }

    /** A whole tensor is the piece at offset 0 of every dimension. */
    private static Map<String, long[]> wholeTensorOffsets(Shard s) {
        Map<String, long[]> offsets = new HashMap<>();
        for (SafetensorsFormat.Entry e : s.header().entries()) {
            offsets.put(e.name(), new long[e.shape().length]);
        }
        return offsets;
    }

    /** A folder's index, when it has one; an index that is not a file is refused rather than passed over. */
    private static Optional<ShardIndex> index(Path folder) throws IOException {
        Path index = folder.resolve(ShardIndex.FILE_NAME);
        if (Files.exists(index, LinkOption.NOFOLLOW_LINKS) && !Files.isRegularFile(index)) {
            throw new InvalidCheckpointException(index + ": not a file");
        }
        return Files.isRegularFile(index) ? Optional.of(ShardIndex.read(index)) : Optional.empty();
    }

    /** The shards of a folder without an index: every {@code *.safetensors}, in name order. */
    private static List<Path> unindexedShards(Path folder) throws IOException {
        List<Path> files = safetensorsFiles(folder);
        if (files.isEmpty()) {
            throw new InvalidCheckpointException(folder + ": no *.safetensors files");
        }
        return files;
    }

    private static List<Path> safetensorsFiles(Path folder) throws IOException {
        try (Stream<Path> s = Files.list(folder)) {
            return s.filter(p -> p.getFileName().toString().endsWith(".safetensors") && Files.isRegularFile(p))
                    .sorted()
                    .toList();
        }
    }

    /**
     * A {@code *.safetensors} file beside an index that does not name it is refused rather than left
     * out: it is a shard the index lost or a file that does not belong, and either way the result would
     * silently differ from what the folder holds.
     */
    private static void refuseUnindexed(Path folder, List<Path> indexed, Path index) throws IOException {
        for (Path f : safetensorsFiles(folder)) {
            if (!indexed.contains(f)) {
                throw new InvalidCheckpointException(f + ": a shard that " + index.getFileName() + " does not name");
            }
        }
    }

    /**
     * A shard whose header has been validated against its size.
     *
     * @param pieceOffsets for a file of a sharded save, where each of its tensors starts in the whole tensor;
     *                     empty for a file of whole tensors
     */
    record Shard(Path file, long size, SafetensorsFormat.Header header, Map<String, long[]> pieceOffsets) {}

    private static Shard readShard(Path file) throws IOException {
        if (!Files.isRegularFile(file)) {
            throw new InvalidCheckpointException(file + ": missing shard");
        }
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = ch.size();
            ByteBuffer first8 = ByteBuffer.allocate(8);
            readFully(ch, first8, 0);
            first8.flip();
            long n = SafetensorsFormat.headerLength(first8, size, file.toString());
            ByteBuffer json = ByteBuffer.allocate((int) n);
            readFully(ch, json, 8);
            return new Shard(file, size, SafetensorsFormat.parseHeader(json.array(), size, file.toString()), Map.of());
        }
    }

    private static void readFully(FileChannel ch, ByteBuffer buf, long position) throws IOException {
        long pos = position;
        while (buf.hasRemaining()) {
            int n = ch.read(buf, pos);
            if (n < 0) {
                break;
            }
            pos += n;
        }
    }
}
