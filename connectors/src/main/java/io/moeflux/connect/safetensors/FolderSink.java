package io.moeflux.connect.safetensors;

import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.FileRegion;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.Tensor;
import io.moeflux.tensor.TensorInfo;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CancellationException;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.locks.ReentrantLock;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Scheduler;
import reactor.core.scheduler.Schedulers;

/**
 * The folder sink (see {@link SafetensorsSink}). Events become write tasks, one per piece of a tensor
 * (a whole dense tensor, or one expert slab of a merged one); at most {@code writeThreads} tasks run at
 * once, which is also how far ahead of the disk the sink asks upstream for tensors.
 */
final class FolderSink implements PlaceableSink {
    /**
     * In-kernel copies go in slices of this size, each under the file's write lock, so progress keeps
     * moving on huge tensors and concurrent writes into the same file wait for a millisecond at most.
     */
    private static final long COPY_SLICE = 4L << 20;

    private final SafetensorsSinkOptions options;
    private final CommitCalls calls;

    /** A sink whose commits make {@code calls} (without their syncs when the options are not durable). */
    FolderSink(SafetensorsSinkOptions options, CommitCalls calls) {
        this.options = options;
        this.calls = options.durable() ? calls : calls.withoutSyncs();
    }

    @Override
    public Mono<CommitSummary> write(CheckpointDescriptor planned, Flux<TensorEvent> events) {
        return Mono.defer(() -> {
            // Until events are subscribed no tensor exists, so failing here leaks nothing.
            Run run;
            try {
                run = new Run(planned);
            } catch (IOException | RuntimeException e) {
                return Mono.error(e);
            }
            return run.write(events);
        });
    }

    @Override
    public PlannedCheckpoint open(CheckpointDescriptor planned) throws IOException {
        if (planned.tensors().isEmpty()) {
            throw new IllegalArgumentException("only a planned checkpoint can be opened before its tensors arrive");
        }
        return new Run(planned);
    }

    /** One checkpoint being written: its staging folder, its files and its writer threads. */
    private final class Run implements PlannedCheckpoint {
        private final CheckpointDescriptor planned;
        private final Staging staging;
        private final Placer placer;
        private final Scheduler io;
        private final InFlight inFlight = new InFlight();
        private final AtomicBoolean cancelled = new AtomicBoolean();
        private final AtomicBoolean cleanedUp = new AtomicBoolean();

        Run(CheckpointDescriptor planned) throws IOException {
            this.planned = planned;
            this.staging = Staging.create(options.output(), options.overwrite(), calls);
            try {
                this.placer = planned.tensors().isPresent()
                        ? new PlannedPlacer(staging.dir(), ShardLayout.plan(planned.tensors().get(), options.maxShardSize()))
                        : new SpoolPlacer(staging.dir());
            } catch (IOException | RuntimeException e) {
                staging.abort();
                throw e;
            }
            this.io = Schedulers.newBoundedElastic(options.writeThreads(), Integer.MAX_VALUE, "moeflux-write");
        }

        @Override
        public Optional<Placement> placement(String tensorName) {
            return placer.placement(tensorName);
        }

        @Override
        public Mono<CommitSummary> write(Flux<TensorEvent> events) {
            return events
                    .concatMap(event -> Flux.fromIterable(placer.tasks(event)), 1)
                    .flatMap(task -> onIo(Mono.fromRunnable(() -> inFlight.run(task, cancelled)))
                                    .doOnCancel(task::cancel),
                            options.writeThreads(), 1)
                    .doOnDiscard(WriteTask.class, WriteTask::abandonUnstarted)
                    // Below both operators, so tensors they still queue when the write fails are released too.
                    .doOnDiscard(TensorEvent.class, TensorEvent::release)
                    .then(onIo(Mono.fromCallable(() -> {
                        // A cancel runs abort() before it reaches the writes upstream, and writes that fail after
                        // it end quietly, so the writes can all "end" with tensors missing: never commit then.
                        if (cancelled.get()) {
                            throw new CancellationException("the write was cancelled before its commit");
                        }
                        ShardLayout layout = placer.finish(options.maxShardSize());
                        writeSidecars(staging.dir(), layout, planned);
                        staging.commit();
                        return new CommitSummary(options.output().toString(), layout.tensorCount(),
                                layout.totalBytes(), layout.shards().size());
                    })))
                    .onErrorResume(e -> {
                        cancelled.set(true);
                        return Mono.fromRunnable(this::cleanup).then(Mono.error(e));
                    })
                    .doOnSuccess(summary -> cleanup())
                    .doOnCancel(this::abort);
        }

        /**
         * {@code work} on the writer threads. Once the write is cancelled or failed, cleanup disposes them
         * while a racing subscription may still try to schedule there; that rejection is expected and
         * dropped rather than logged, as any failure after the end is.
         */
        private <T> Mono<T> onIo(Mono<T> work) {
            return work.subscribeOn(io).onErrorResume(e -> cancelled.get() ? Mono.empty() : Mono.error(e));
        }

        @Override
        public void abort() {
            cancelled.set(true);
            cleanup();
        }

        /**
         * Tasks already running finish their piece (and release their tensor) before the staging
         * folder goes, so a failed write leaves neither files nor held memory behind. Runs once.
         */
        private void cleanup() {
            if (cleanedUp.compareAndSet(false, true)) {
                inFlight.awaitIdle();
                placer.close();
                io.dispose();
                staging.abortIfNotCommitted();
            }
        }
    }

    /** Counts running write tasks so that cleanup can wait for them. */
    private static final class InFlight {
        private int running;

        /**
         * Runs a task; once the write or the task is cancelled its failures (interrupted I/O) are expected
         * and dropped: nobody waits for them, and Reactor would log each with its stack trace.
         */
        void run(WriteTask task, AtomicBoolean cancelled) {
            synchronized (this) {
                running++;
            }
            try {
                task.run();
            } catch (RuntimeException e) {
                if (!cancelled.get() && !task.isCancelled()) {
                    throw e;
                }
            } finally {
                synchronized (this) {
                    running--;
                    notifyAll();
                }
            }
        }

        synchronized void awaitIdle() {
            long deadline = System.nanoTime() + 30_000_000_000L;
            while (running > 0 && System.nanoTime() < deadline) {
                try {
                    wait(100);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        }
    }

    private void writeSidecars(Path dir, ShardLayout layout, CheckpointDescriptor planned) throws IOException {
        if (layout.shards().size() > 1) {
            writeSynced(dir.resolve(ShardIndex.FILE_NAME), layout.index().toJson());
        }
        if (planned.configJson().isPresent()) {
            writeSynced(dir.resolve("config.json"), planned.configJson().get());
        }
    }

    private void writeSynced(Path file, byte[] bytes) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            FileWrites.write(ch, ByteBuffer.wrap(bytes), 0);
            calls.syncFile(file, ch);
        }
    }

    /** One piece of one tensor, to be written at a file offset; the tensor is released after its last piece. */
    private final class WriteTask {
        private final TensorEvent event;
        private final Tensor.Piece piece;
        private final OutputFile target;
        private final long fileOffset;
        private final AtomicInteger remaining;
        private final TensorWritten written;
        private final AtomicBoolean started = new AtomicBoolean();
        private final AtomicBoolean cancelled = new AtomicBoolean();

        WriteTask(TensorEvent event, Tensor.Piece piece, OutputFile target, long fileOffset,
                  AtomicInteger remaining, TensorWritten written) {
            this.event = event;
            this.piece = piece;
            this.target = target;
            this.fileOffset = fileOffset;
            this.remaining = remaining;
            this.written = written;
        }

        void run() {
            if (!started.compareAndSet(false, true)) {
                return;
            }
            long[] pos = {fileOffset + piece.offset()};
            try {
                var region = event.tensor().fileRegion();
                if (region.isPresent() && isInPlace(region.get(), pos[0])) {
                    // A source that was handed this tensor's placement wrote it there already.
                    pos[0] += piece.byteSize();
                    options.progress().bytesWritten(piece.byteSize());
                } else if (region.isPresent() && piece.byteSize() == region.get().size()) {
                    pos[0] += copyInKernel(region.get(), pos[0]);
                } else {
                    writeThroughMemory(pos);
                }
            } catch (IOException e) {
                abandon();
                throw new UncheckedIOException("writing " + event.fqn() + ": " + e.getMessage(), e);
            } catch (RuntimeException e) {
                abandon();
                throw e;
            }
            if (pos[0] != fileOffset + piece.offset() + piece.byteSize()) {
                abandon();
                throw new IllegalStateException(event.fqn() + " produced " + (pos[0] - fileOffset - piece.offset())
                        + " bytes for a piece of " + piece.byteSize());
            }
            if (remaining.decrementAndGet() == 0) {
                event.release();
                options.progress().tensorWritten(event.fqn());
                afterTensor(written, target);
            }
        }

        private boolean isInPlace(FileRegion region, long at) {
            return region.channel() == target.channel() && region.position() == at && region.size() == piece.byteSize();
        }

        /**
         * Unmodified bytes of a source file go file to file ({@code copy_file_range}), as {@code cp}
         * copies, through a channel of this task's own: the transfer writes at the target channel's
         * position, which concurrent tasks must not share.
         */
        private long copyInKernel(FileRegion region, long at) throws IOException {
            try (FileChannel out = FileChannel.open(target.path(), StandardOpenOption.WRITE)) {
                out.position(at);
                long from = region.position();
                long left = region.size();
                while (left > 0) {
                    long n;
                    target.writeLock().lock();
                    try {
                        n = region.channel().transferTo(from, Math.min(left, COPY_SLICE), out);
                    } finally {
                        target.writeLock().unlock();
                    }
                    if (n <= 0) {
                        throw new IOException("source ended early");
                    }
                    from += n;
                    left -= n;
                    options.progress().bytesWritten(n);
                }
                return region.size();
            }
        }

        private void writeThroughMemory(long[] pos) throws IOException {
            piece.writer().writeTo(chunk -> {
                FileWrites.write(target.channel(), chunk.asByteBuffer(), pos[0], target.writeLock());
                pos[0] += chunk.byteSize();
                options.progress().bytesWritten(chunk.byteSize());
            });
        }

        /** The write no longer waits for this task: a failure of it is expected, and if it has not run, it never will. */
        void cancel() {
            cancelled.set(true);
            abandonUnstarted();
        }

        boolean isCancelled() {
            return cancelled.get();
        }

        /** A task cancelled before it ran still owes its tensor a release. */
        void abandonUnstarted() {
            if (started.compareAndSet(false, true)) {
                abandon();
            }
        }

        void abandon() {
            if (remaining.getAndSet(-1) > 0) {
                event.release();
            }
        }
    }

    /**
     * A file being written and the lock its writes take. The kernel lets one buffered write into a
     * file run at a time and makes the others spin on the inode's lock, burning a core (17% of a run's
     * CPU in a profile); waiting here instead parks the thread, and with one writer more than there are
     * cores, the cores keep transposing while a write copies.
     */
    private record OutputFile(Path path, FileChannel channel, ReentrantLock writeLock) {
        OutputFile(Path path, FileChannel channel) {
            this(path, channel, new ReentrantLock());
        }
    }

    /** Decides where each arriving tensor's bytes go, and lays the shards out at the end. */
    private interface Placer {
        List<WriteTask> tasks(TensorEvent event);

        /** Where a planned tensor's bytes go; empty without a plan. */
        Optional<Placement> placement(String tensorName);

        ShardLayout finish(long maxShardSize) throws IOException;

        void close();
    }

    /** What a placer does once all of a tensor's bytes are in its file. */
    @FunctionalInterface
    private interface TensorWritten {
        TensorWritten NOTHING = () -> {};

        void run() throws IOException;
    }

    private static void afterTensor(TensorWritten written, OutputFile target) {
        try {
            written.run();
        } catch (IOException e) {
            throw new UncheckedIOException("syncing " + target.path() + ": " + e.getMessage(), e);
        }
    }

    private List<WriteTask> tasksAt(TensorEvent event, OutputFile target, long fileOffset, TensorWritten written) {
        List<Tensor.Piece> pieces = event.tensor().pieces();
        AtomicInteger remaining = new AtomicInteger(pieces.size());
        List<WriteTask> tasks = new ArrayList<>(pieces.size());
        for (Tensor.Piece p : pieces) {
            tasks.add(new WriteTask(event, p, target, fileOffset, remaining, written));
        }
        if (pieces.isEmpty()) {
            event.release();
            afterTensor(written, target);
        }
        return tasks;
    }

    /**
     * Writes into shards laid out up front from the planned tensors. A shard is synced as soon as its
     * last tensor is in, on the writer that finished it, so that syncing overlaps with the writing of
     * the other shards instead of stalling the commit.
     */
    private final class PlannedPlacer implements Placer {
        private final ShardLayout layout;
        private final List<OutputFile> targets = new ArrayList<>();
        private final List<AtomicInteger> unwrittenPerShard = new ArrayList<>();
        private final Set<String> written = ConcurrentHashMap.newKeySet();

        PlannedPlacer(Path dir, ShardLayout layout) throws IOException {
            this.layout = layout;
            try {
                for (ShardLayout.Shard s : layout.shards()) {
                    Path file = dir.resolve(s.fileName());
                    FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW,
                            StandardOpenOption.WRITE, StandardOpenOption.READ);
                    targets.add(new OutputFile(file, ch));
                    unwrittenPerShard.add(new AtomicInteger(s.tensors().size()));
                    Preallocation.reserve(file, s.fileBytes());
                    ByteBuffer header = ByteBuffer.wrap(s.header());
                    while (header.hasRemaining()) {
                        ch.write(header, header.position());
                    }
                }
            } catch (IOException | RuntimeException e) {
                close();
                throw e;
            }
        }

        @Override
        public Optional<Placement> placement(String tensorName) {
            ShardLayout.Placement p = layout.placement(tensorName);
            if (p == null) {
                return Optional.empty();
            }
            OutputFile target = targets.get(p.shard());
            return Optional.of(new Placement(target.channel(), p.fileOffset(), p.info().byteSize(), target.writeLock()));
        }

        @Override
        public List<WriteTask> tasks(TensorEvent event) {
            ShardLayout.Placement p = layout.placement(event.fqn());
            TensorInfo actual = event.tensor().info(event.fqn());
            if (p == null) {
                event.release();
                throw new InvalidCheckpointException("tensor " + actual + " was not in the planned checkpoint");
            }
            if (!p.info().equals(actual)) {
                event.release();
                throw new InvalidCheckpointException("tensor " + event.fqn() + " arrived as " + actual.dtype()
                        + Shapes.format(actual.shape()) + " but was planned as " + p.info().dtype()
                        + Shapes.format(p.info().shape()));
            }
            if (!written.add(event.fqn())) {
                event.release();
                throw new InvalidCheckpointException("duplicate tensor " + event.fqn());
            }
            OutputFile target = targets.get(p.shard());
            AtomicInteger unwritten = unwrittenPerShard.get(p.shard());
            return tasksAt(event, target, p.fileOffset(), () -> {
                if (unwritten.decrementAndGet() == 0) {
                    calls.syncFile(target.path(), target.channel());
                }
            });
        }

        @Override
        public ShardLayout finish(long maxShardSize) {
            if (written.size() != layout.tensorCount()) {
                String firstMissing = layout.shards().stream().flatMap(s -> s.tensors().stream())
                        .map(TensorInfo::name).filter(n -> !written.contains(n)).findFirst().orElse("?");
                throw new InvalidCheckpointException((layout.tensorCount() - written.size())
                        + " planned tensors never arrived, the first being " + firstMissing);
            }
            close();
            return layout;
        }

        @Override
        public void close() {
            closeAll(targets.stream().map(OutputFile::channel).toList());
        }
    }

    /** Appends tensors to a spool file as they come and lays the shards out from it at the end. */
    private final class SpoolPlacer implements Placer {
        private record Spooled(TensorInfo info, long offset) {}

        private final Path dir;
        private final Path spoolPath;
        private final FileChannel spool;
        private final OutputFile spoolTarget;
        private final List<Spooled> spooled = new ArrayList<>();
        private final Set<String> names = new HashSet<>();
        private long end;
        private final List<FileChannel> shardChannels = new ArrayList<>();

        SpoolPlacer(Path dir) throws IOException {
            this.dir = dir;
            this.spoolPath = dir.resolve(".spool");
            this.spool = FileChannel.open(spoolPath, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE,
                    StandardOpenOption.READ);
            this.spoolTarget = new OutputFile(spoolPath, spool);
        }

        @Override
        public Optional<Placement> placement(String tensorName) {
            return Optional.empty();
        }

        @Override
        public synchronized List<WriteTask> tasks(TensorEvent event) {
            if (!names.add(event.fqn())) {
                event.release();
                throw new InvalidCheckpointException("duplicate tensor " + event.fqn());
            }
            TensorInfo info = event.tensor().info(event.fqn());
            long at = end;
            end += info.byteSize();
            spooled.add(new Spooled(info, at));
            return tasksAt(event, spoolTarget, at, TensorWritten.NOTHING);
        }

        @Override
        public ShardLayout finish(long maxShardSize) throws IOException {
            ShardLayout layout = ShardLayout.plan(spooled.stream().map(Spooled::info).toList(), maxShardSize);
            Map<String, Long> spoolOffsets = new HashMap<>();
            spooled.forEach(s -> spoolOffsets.put(s.info().name(), s.offset()));
            for (ShardLayout.Shard s : layout.shards()) {
                Path file = dir.resolve(s.fileName());
                FileChannel out = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
                shardChannels.add(out);
                Preallocation.reserve(file, s.fileBytes());
                ByteBuffer header = ByteBuffer.wrap(s.header());
                while (header.hasRemaining()) {
                    out.write(header);
                }
                for (TensorInfo t : s.tensors()) {
                    long from = spoolOffsets.get(t.name());
                    long left = t.byteSize();
                    while (left > 0) {
                        long n = spool.transferTo(from, left, out);
                        if (n <= 0) {
                            throw new IOException("spool ended early while copying " + t.name());
                        }
                        from += n;
                        left -= n;
                    }
                }
                calls.syncFile(file, out);
            }
            close();
            Files.deleteIfExists(spoolPath);
            return layout;
        }

        @Override
        public void close() {
            closeAll(shardChannels);
            closeAll(List.of(spool));
        }
    }

    private static void closeAll(List<FileChannel> channels) {
        for (FileChannel ch : channels) {
            try {
                ch.close();
            } catch (IOException ignored) {
                // Closing after a failure: the staging folder is deleted anyway.
            }
        }
    }
}
