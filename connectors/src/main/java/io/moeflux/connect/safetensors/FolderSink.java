package io.moeflux.connect.safetensors;

import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSink;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.pipeline.PartedWrite;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.Box;
import io.moeflux.tensor.BoxLayout;
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
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CancellationException;
import java.util.concurrent.Callable;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.MonoSink;
import reactor.core.publisher.SignalType;
import reactor.core.scheduler.Scheduler;
import reactor.core.scheduler.Schedulers;

/**
 * The folder sink (see {@link SafetensorsSink}), the only writer of its files. Each arriving tensor, or
 * piece of one, is given its place: a slot of the whole tensor in a shard file (planned up front, or in a
 * spool file in arrival order), where the piece's box lands at its offset, as one contiguous range or,
 * for a box that is not contiguous in the file, as strided writes of its rows. Each slot counts what has
 * arrived of its tensor and refuses a piece that overlaps an earlier one; the commit refuses unless every
 * tensor is covered exactly once, naming a region that never arrived.
 *
 * <p>Events become write tasks (one per range a tensor can be written in concurrently, see
 * {@link Tensor#byteRanges()}); at most {@code writeThreads} run at once, which is also how far ahead of the
 * disk the sink asks upstream for tensors. A checkpoint written in parts ({@link #writeInParts}) runs each
 * part's events so, all parts over the same writer threads and files; a write from one stream is one part.
 */
final class FolderSink implements CheckpointSink {
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
    public boolean placesPieces() {
        return true;
    }

    @Override
    public Optional<PartedWrite> writeInParts(CheckpointDescriptor planned) {
        if (planned.tensors().isEmpty()) {
            throw new IllegalArgumentException("a checkpoint written in parts needs its tensors planned up front");
        }
        try {
            return Optional.of(new Run(planned));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot stage " + options.output() + ": " + e.getMessage(), e);
        }
    }

    /**
     * One checkpoint being written: its staging folder, its files and its writer threads. A write from one
     * stream is a write of one part, then the commit.
     */
    private final class Run implements PartedWrite {
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
                        ? new PlannedPlacer(staging.dir(), planned.outputFiles().isPresent()
                                ? ShardLayout.assigned(planned.tensors().get(), planned.outputFiles().get())
                                : ShardLayout.plan(planned.tensors().get(), options.maxShardSize()))
                        : new SpoolPlacer(staging.dir());
            } catch (IOException | RuntimeException e) {
                staging.abort();
                throw e;
            }
            this.io = Schedulers.newBoundedElastic(options.writeThreads(), Integer.MAX_VALUE, "moeflux-write");
        }

        Mono<CommitSummary> write(Flux<TensorEvent> events) {
            return part(events)
                    .onErrorResume(this::failed)
                    .then(commit())
                    .doOnCancel(() -> cancelled.set(true))
                    // After the cancel has reached the source (so nothing a task waits for is still coming).
                    .doFinally(signal -> {
                        if (signal == SignalType.CANCEL) {
                            discard();
                        }
                    });
        }

        @Override
        public Mono<Void> part(Flux<TensorEvent> events) {
            return Mono.defer(() -> {
                if (cancelled.get()) {
                    // Its events are never subscribed, so none is made that would need a release.
                    return Mono.<Void>error(new IllegalStateException("the write of " + options.output() + " has ended"));
                }
                Part part = new Part();
                return events
                        .concatMap(event -> Flux.fromIterable(tasks(event, part)), 1)
                        .flatMap(task -> onIo(() -> {
                                    run(task);
                                    return true;
                                }).doOnCancel(task::cancel),
                                options.writeThreads(), 1)
                        .doOnDiscard(WriteTask.class, WriteTask::abandonUnstarted)
                        // Below both operators, so tensors they still queue when the part fails are released too.
                        .doOnDiscard(TensorEvent.class, TensorEvent::release)
                        .then()
                        .onErrorResume(e -> part.forget().then(Mono.error(e)))
                        .doOnCancel(part::forgetLater);
            });
        }

        @Override
        public Mono<CommitSummary> commit() {
            if (cancelled.get()) {
                return Mono.error(new IllegalStateException("the write of " + options.output() + " has ended"));
            }
            return onIo(() -> {
                        // A cancel marks the run before it reaches the writes upstream, and writes that fail after
                        // it end quietly, so the writes can all "end" with tensors missing: never commit then.
                        if (cancelled.get()) {
                            throw new CancellationException("the write was cancelled before its commit");
                        }
                        ShardLayout layout = placer.finish(options.maxShardSize());
                        writeSidecars(staging.dir(), layout, planned);
                        staging.commit();
                        return new CommitSummary(options.output().toString(), layout.tensorCount(),
                                layout.totalBytes(), layout.shards().size());
                    })
                    .onErrorResume(this::failed)
                    .doOnSuccess(summary -> cleanup());
        }

        @Override
        public Mono<Void> abort() {
            return Mono.fromRunnable(this::discard);
        }

        /** Tasks still running stop at their next write; the staging folder goes once they have. */
        private <T> Mono<T> failed(Throwable e) {
            cancelled.set(true);
            return Mono.fromFuture(inFlight.close(), true).then(Mono.fromRunnable(this::cleanup)).then(Mono.error(e));
        }

        /**
         * {@code work} on the writer threads. A cancel never interrupts it: an interrupt closes a file channel
         * in the middle of a write, and the channels are shared by all of a run's parts; a cancelled task stops
         * at its next write instead. Once the write is cancelled or failed, cleanup disposes the threads while
         * a racing subscription may still try to schedule there; that rejection is expected and dropped rather
         * than logged, as any failure after the end is.
         */
        private <T> Mono<T> onIo(Callable<T> work) {
            return Mono.create(sink -> {
                Runnable task = () -> {
                    T value;
                    try {
                        value = work.call();
                    } catch (Throwable e) {
                        endQuietlyIfCancelled(sink, e);
                        return;
                    }
                    sink.success(value);
                };
                try {
                    io.schedule(task);
                } catch (RejectedExecutionException e) {
                    endQuietlyIfCancelled(sink, e);
                }
            });
        }

        private void endQuietlyIfCancelled(MonoSink<?> sink, Throwable e) {
            if (cancelled.get()) {
                sink.success();
            } else {
                sink.error(e);
            }
        }

        /**
         * Runs a task unless the run has ended; once the run or the task is cancelled, its failures
         * (a write stopped half-way) are expected and dropped: nobody waits for them, and Reactor would
         * log each with its stack trace.
         */
        private void run(WriteTask task) {
            Part part = task.part;
            if (!inFlight.enter()) {
                task.abandonUnstarted();
                return;
            }
            if (!part.inFlight.enter()) {
                inFlight.exit();
                task.abandonUnstarted();
                return;
            }
            try {
                task.run(cancelled);
            } catch (RuntimeException e) {
                if (!cancelled.get() && !task.isCancelled()) {
                    throw e;
                }
            } finally {
                part.inFlight.exit();
                inFlight.exit();
            }
        }

        /**
         * Removes the staging folder once no write runs any more; a write stops at its next system call
         * once the run is cancelled, so this waits for one call at most. Blocks the cancelling thread for
         * that long: a Ctrl-C must not let the process exit before the folder is gone.
         */
        void discard() {
            cancelled.set(true);
            inFlight.close().join();
            cleanup();
        }

        /** Releases the files and threads and removes the staging folder unless committed. Runs once. */
        private void cleanup() {
            if (cleanedUp.compareAndSet(false, true)) {
                placer.close();
                io.dispose();
                staging.abortIfNotCommitted();
            }
        }

        /** The write tasks of one arriving tensor or piece of {@code part}, after its slot has taken it. */
        private List<WriteTask> tasks(TensorEvent event, Part part) {
            Slot slot;
            Taken taken;
            try {
                slot = placer.slot(event);
                taken = part.take(slot, event);
            } catch (RuntimeException e) {
                event.release();
                throw e;
            }
            Box box = event.box();
            long[] whole = slot.info().shape();
            long elementBytes = slot.info().dtype().byteSize();
            if (box.isEmpty()) {
                event.release();
                slot.written(0);
                return List.of();
            }
            int partial = BoxLayout.lastPartialDim(box, whole);
            if (BoxLayout.isContiguous(box, whole, partial)) {
                long at = slot.fileOffset() + BoxLayout.firstElement(box, whole) * elementBytes;
                List<Tensor.ByteRange> ranges = event.tensor().byteRanges();
                AtomicInteger remaining = new AtomicInteger(ranges.size());
                List<WriteTask> tasks = new ArrayList<>(ranges.size());
                for (Tensor.ByteRange range : ranges) {
                    tasks.add(new WriteTask(event, taken, part, range, at + range.offset(), null, remaining));
                }
                return tasks;
            }
            Tensor.ByteRange all = new Tensor.ByteRange(0, event.tensor().byteSize(), event.tensor()::writeTo);
            return List.of(new WriteTask(event, taken, part, all, slot.fileOffset(),
                    new BoxLayout.Strided(box, whole, elementBytes), new AtomicInteger(1)));
        }
    }

    /** A piece a part's slot took, and how many of its bytes are on file: what the part gives back if it fails. */
    private record Taken(Slot slot, Box box, AtomicLong written) {}

    /**
     * One part of a run: its writes in flight, and the pieces it has taken, to be given back when it fails
     * or is cancelled, after its last write has stopped (so nothing it writes can land on the bytes of
     * whatever takes the region next).
     */
    private static final class Part {
        final InFlight inFlight = new InFlight();
        final AtomicBoolean cancelled = new AtomicBoolean();
        private final List<Taken> taken = new ArrayList<>();
        private boolean forgotten;

        /** Has the slot take {@code event} for this part; refused once the part is forgotten. */
        synchronized Taken take(Slot slot, TensorEvent event) {
            if (forgotten) {
                throw new CancellationException("the part was forgotten");
            }
            slot.take(event);
            Taken t = new Taken(slot, event.box(), new AtomicLong());
            taken.add(t);
            return t;
        }

        /** Stops the part's writes; completes once the last has stopped and what it took is given back. */
        Mono<Void> forget() {
            cancelled.set(true);
            return Mono.fromFuture(inFlight.close(), true).then(Mono.fromRunnable(this::giveBack));
        }

        /** As {@link #forget}, for a part whose write nobody waits for any more. */
        void forgetLater() {
            cancelled.set(true);
            inFlight.close().thenRun(this::giveBack);
        }

        private synchronized void giveBack() {
            forgotten = true;
            taken.forEach(t -> t.slot().giveBack(t.box(), t.written().get()));
            taken.clear();
        }
    }

    /**
     * Counts running write tasks, so that the staging folder goes only after the last of them: once
     * closed, no task starts and {@link #close()}'s future completes when the running ones have ended.
     */
    private static final class InFlight {
        private final CompletableFuture<Void> drained = new CompletableFuture<>();
        private int running;
        private boolean closed;

        synchronized boolean enter() {
            if (closed) {
                return false;
            }
            running++;
            return true;
        }

        void exit() {
            boolean last;
            synchronized (this) {
                last = --running == 0 && closed;
            }
            if (last) {
                drained.complete(null);
            }
        }

        CompletableFuture<Void> close() {
            boolean idle;
            synchronized (this) {
                closed = true;
                idle = running == 0;
            }
            if (idle) {
                drained.complete(null);
            }
            return drained;
        }
    }

    private void writeSidecars(Path dir, ShardLayout layout, CheckpointDescriptor planned) throws IOException {
        if (layout.shards().size() > 1 || planned.outputFiles().isPresent()) {
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

    /**
     * One byte range of one arriving tensor or piece, written at a file offset (or, for a box that is not
     * contiguous in the file, through {@code strided}); the event is released after its last range, and
     * the slot told how many bytes went in.
     */
    private final class WriteTask {
        private final TensorEvent event;
        private final Slot slot;
        private final Taken taken;
        private final Part part;
        private final Tensor.ByteRange range;
        private final long fileOffset;
        private final BoxLayout.Strided strided;
        private final AtomicInteger remaining;
        private final AtomicBoolean started = new AtomicBoolean();
        private final AtomicBoolean cancelled = new AtomicBoolean();

        WriteTask(TensorEvent event, Taken taken, Part part, Tensor.ByteRange range, long fileOffset,
                  BoxLayout.Strided strided, AtomicInteger remaining) {
            this.event = event;
            this.slot = taken.slot();
            this.taken = taken;
            this.part = part;
            this.range = range;
            this.fileOffset = fileOffset;
            this.strided = strided;
            this.remaining = remaining;
        }

        void run(AtomicBoolean runCancelled) {
            if (!started.compareAndSet(false, true)) {
                return;
            }
            OutputFile target = slot.file();
            long wrote;
            try {
                var region = event.tensor().fileRegion();
                if (strided == null && region.isPresent() && range.byteSize() == region.get().size()) {
                    wrote = copyInKernel(region.get(), target, runCancelled);
                } else {
                    wrote = writeThroughMemory(target, runCancelled);
                }
            } catch (IOException e) {
                abandon();
                throw new UncheckedIOException("writing " + event.fqn() + ": " + e.getMessage(), e);
            } catch (RuntimeException e) {
                abandon();
                throw e;
            }
            if (wrote != range.byteSize()) {
                abandon();
                throw new IllegalStateException(event.fqn() + " produced " + wrote + " bytes for a range of " + range.byteSize());
            }
            if (remaining.decrementAndGet() == 0) {
                event.release();
            }
            taken.written().addAndGet(wrote);
            slot.written(wrote);
        }

        /**
         * Unmodified bytes of a source file go file to file ({@code copy_file_range}), as {@code cp}
         * copies, through a channel of this task's own: the transfer writes at the target channel's
         * position, which concurrent tasks must not share.
         */
        private long copyInKernel(FileRegion region, OutputFile target, AtomicBoolean runCancelled) throws IOException {
            try (FileChannel out = FileChannel.open(target.path(), StandardOpenOption.WRITE)) {
                out.position(fileOffset);
                long from = region.position();
                long left = region.size();
                while (left > 0) {
                    stopIfCancelled(runCancelled);
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

        private long writeThroughMemory(OutputFile target, AtomicBoolean runCancelled) throws IOException {
            long[] produced = {0};
            range.writer().writeTo(chunk -> {
                stopIfCancelled(runCancelled);
                if (strided == null) {
                    FileWrites.write(target.channel(), chunk.asByteBuffer(), fileOffset + produced[0], target.writeLock());
                } else {
                    strided.write(chunk, produced[0], (bytes, at) -> FileWrites.write(target.channel(), bytes,
                            fileOffset + at, target.writeLock()));
                }
                produced[0] += chunk.byteSize();
                options.progress().bytesWritten(chunk.byteSize());
            });
            return produced[0];
        }

        /** A cancelled run's (or part's) writes stop at their next system call, so that its cleanup never waits long. */
        private void stopIfCancelled(AtomicBoolean runCancelled) {
            if (runCancelled.get() || part.cancelled.get() || cancelled.get()) {
                throw new CancellationException("the write was cancelled");
            }
        }

        /** The write no longer waits for this task: a failure of it is expected, and if it has not run, it never will. */
        void cancel() {
            cancelled.set(true);
            abandonUnstarted();
        }

        boolean isCancelled() {
            return cancelled.get() || part.cancelled.get();
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

    /**
     * One tensor's place in a file, and what has arrived of it. A piece is taken (checked and counted)
     * when it arrives, before any byte of it is written, so an overlap is refused before it can
     * overwrite anything; {@link #written} counts bytes on file, and the last of them tells
     * {@code whenWhole}. A piece of a part that failed is given back: its region counts as never arrived.
     */
    private final class Slot {
        private final TensorInfo info;
        private final OutputFile file;
        private final long fileOffset;
        private final TensorWritten whenWhole;
        private final List<Box> arrived = new ArrayList<>();
        private long arrivedElements;
        /** Pieces taken, empty ones too. */
        private int pieces;
        private long unwrittenBytes;
        private boolean whole;
        /** Progress has been told: once per tensor, also when a part given back made it whole twice. */
        private boolean reported;

        Slot(TensorInfo info, OutputFile file, long fileOffset, TensorWritten whenWhole) {
            this.info = info;
            this.file = file;
            this.fileOffset = fileOffset;
            this.whenWhole = whenWhole;
            this.unwrittenBytes = info.byteSize();
        }

        TensorInfo info() {
            return info;
        }

        OutputFile file() {
            return file;
        }

        long fileOffset() {
            return fileOffset;
        }

        synchronized void take(TensorEvent event) {
            TensorInfo actual = event.wholeInfo();
            if (!info.equals(actual)) {
                throw new InvalidCheckpointException("tensor " + event.fqn() + " arrived as " + actual.dtype()
                        + Shapes.format(actual.shape()) + (event.isWhole() ? "" : " (piece " + event.box() + ")")
                        + " but is " + info.dtype() + Shapes.format(info.shape()) + " in this checkpoint");
            }
            Box box = event.box();
            for (Box earlier : arrived) {
                if (box.overlaps(earlier)) {
                    throw new InvalidCheckpointException(event.isWhole() && earlier.covers(info.shape())
                            ? "duplicate tensor " + event.fqn()
                            : "tensor " + event.fqn() + ": region " + box.intersection(earlier) + " arrived twice (pieces "
                                    + earlier + " and " + box + ")");
                }
            }
            pieces++;
            if (!box.isEmpty()) {
                arrived.add(box);
                arrivedElements += box.numel();
            }
        }

        /** A piece taken earlier, {@code writtenBytes} of it on file, is to count as never arrived. */
        synchronized void giveBack(Box box, long writtenBytes) {
            pieces--;
            if (!box.isEmpty()) {
                arrived.remove(box);
                arrivedElements -= box.numel();
            }
            unwrittenBytes += writtenBytes;
            if (whole && writtenBytes > 0) {
                whole = false;
                whenWhole.undone();
            }
        }

        /** Nothing arrived of it, not even an empty piece. */
        synchronized boolean isAbsent() {
            return pieces == 0;
        }

        synchronized boolean isCovered() {
            return pieces > 0 && arrivedElements == Shapes.numel(info.shape());
        }

        /** Why the tensor is not complete: what never arrived of it. */
        synchronized String missing() {
            return "tensor " + info.name() + ": region " + BoxLayout.firstGap(arrived, info.shape()) + " of "
                    + Shapes.format(info.shape()) + " never arrived (" + arrived.size() + " pieces did)";
        }

        synchronized void written(long bytes) {
            // Empty pieces report 0 bytes, also after the last bytes: the tensor is whole once.
            unwrittenBytes -= bytes;
            if (unwrittenBytes == 0 && !whole) {
                whole = true;
                if (!reported) {
                    reported = true;
                    options.progress().tensorWritten(info.name());
                }
                afterTensor(whenWhole, file);
            }
        }
    }

    /** Gives each arriving tensor its slot, and lays the shards out at the end. */
    private interface Placer {
        /** The slot of the tensor {@code event} is (a piece of); throws when it has none. */
        Slot slot(TensorEvent event);

        ShardLayout finish(long maxShardSize) throws IOException;

        void close();
    }

    /** What a placer does once all of a tensor's bytes are in its file, and when some of them are given back. */
    private interface TensorWritten {
        TensorWritten NOTHING = new TensorWritten() {
            @Override
            public void whole() {}

            @Override
            public void undone() {}
        };

        void whole() throws IOException;

        void undone();
    }

    private static void afterTensor(TensorWritten written, OutputFile target) {
        try {
            written.whole();
        } catch (IOException e) {
            throw new UncheckedIOException("syncing " + target.path() + ": " + e.getMessage(), e);
        }
    }

    /**
     * Fails unless every slot's tensor is covered: tensors that never arrived are counted and the first
     * named; else the first tensor with a region that never arrived is named with that region.
     */
    private static void requireCovered(List<Slot> slots) {
        List<Slot> absent = slots.stream().filter(Slot::isAbsent).toList();
        if (!absent.isEmpty()) {
            throw new InvalidCheckpointException(absent.size() + " planned tensors never arrived, the first being "
                    + absent.getFirst().info().name());
        }
        for (Slot slot : slots) {
            if (!slot.isCovered()) {
                throw new InvalidCheckpointException(slot.missing());
            }
        }
    }

    /**
     * Writes into shards laid out up front from the planned tensors. A shard is synced as soon as its
     * last tensor is in, on the writer that finished it, so that syncing overlaps with the writing of
     * the other shards instead of stalling the commit.
     */
    private final class PlannedPlacer implements Placer {
        private final ShardLayout layout;
        private final List<OutputFile> targets = new ArrayList<>();
        private final Map<String, Slot> slots = new HashMap<>();

        PlannedPlacer(Path dir, ShardLayout layout) throws IOException {
            this.layout = layout;
            try {
                for (ShardLayout.Shard s : layout.shards()) {
                    Path file = dir.resolve(s.fileName());
                    FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW,
                            StandardOpenOption.WRITE, StandardOpenOption.READ);
                    OutputFile target = new OutputFile(file, ch);
                    targets.add(target);
                    Preallocation.reserve(file, s.fileBytes());
                    ByteBuffer header = ByteBuffer.wrap(s.header());
                    while (header.hasRemaining()) {
                        ch.write(header, header.position());
                    }
                    AtomicInteger unwritten = new AtomicInteger(s.tensors().size());
                    TensorWritten syncWhenLast = new TensorWritten() {
                        @Override
                        public void whole() throws IOException {
                            if (unwritten.decrementAndGet() == 0) {
                                calls.syncFile(target.path(), target.channel());
                            }
                        }

                        @Override
                        public void undone() {
                            // Written again later, and synced again when its shard is whole again.
                            unwritten.incrementAndGet();
                        }
                    };
                    for (TensorInfo t : s.tensors()) {
                        slots.put(t.name(), new Slot(t, target, layout.placement(t.name()).fileOffset(), syncWhenLast));
                    }
                }
            } catch (IOException | RuntimeException e) {
                close();
                throw e;
            }
        }

        @Override
        public Slot slot(TensorEvent event) {
            Slot slot = slots.get(event.fqn());
            if (slot == null) {
                throw new InvalidCheckpointException("tensor " + event.wholeInfo() + " was not in the planned checkpoint");
            }
            return slot;
        }

        @Override
        public ShardLayout finish(long maxShardSize) {
            List<Slot> inOrder = layout.shards().stream().flatMap(s -> s.tensors().stream()).map(t -> slots.get(t.name())).toList();
            requireCovered(inOrder);
            close();
            return layout;
        }

        @Override
        public void close() {
            closeAll(targets.stream().map(OutputFile::channel).toList());
        }
    }

    /**
     * Without a plan: each tensor gets its slot in a spool file when its first piece arrives (a piece
     * says its whole tensor's shape), and the shards are laid out from the spool at the end.
     */
    private final class SpoolPlacer implements Placer {
        private final Path dir;
        private final Path spoolPath;
        private final FileChannel spool;
        private final OutputFile spoolTarget;
        private final Map<String, Slot> slots = new LinkedHashMap<>();
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
        public synchronized Slot slot(TensorEvent event) {
            Slot slot = slots.get(event.fqn());
            if (slot == null) {
                TensorInfo info = event.wholeInfo();
                slot = new Slot(info, spoolTarget, end, TensorWritten.NOTHING);
                end += info.byteSize();
                slots.put(event.fqn(), slot);
            }
            return slot;
        }

        @Override
        public ShardLayout finish(long maxShardSize) throws IOException {
            requireCovered(List.copyOf(slots.values()));
            ShardLayout layout = ShardLayout.plan(slots.values().stream().map(Slot::info).toList(), maxShardSize);
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
                    long from = slots.get(t.name()).fileOffset();
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
