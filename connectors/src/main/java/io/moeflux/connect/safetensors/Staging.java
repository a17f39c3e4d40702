package io.moeflux.connect.safetensors;

import io.moeflux.connect.OutputExistsException;
import java.io.IOException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.attribute.BasicFileAttributes;
import java.security.SecureRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;

/**
 * A hidden folder beside the output where a checkpoint is written, renamed into place at commit so
 * that nothing with the final name exists until everything is written.
 *
 * <p>The commit is also what makes the checkpoint survive a crash: its files are synced as they are
 * finished (by the sink), then this folder, then it takes the output's name, then the parent folder is
 * synced, and only then does the commit return. Until that last sync a power loss can undo the rename
 * but never leave the name on a folder whose bytes did not reach the disk.
 */
final class Staging {
    private static final SecureRandom RANDOM = new SecureRandom();
    private final Path output;
    private final Path dir;
    private final boolean overwrite;
    private final CommitCalls calls;
    private final AtomicBoolean committed = new AtomicBoolean();
    private final AtomicBoolean finished = new AtomicBoolean();

    private Staging(Path output, Path dir, boolean overwrite, CommitCalls calls) {
        this.output = output;
        this.dir = dir;
        this.overwrite = overwrite;
        this.calls = calls;
    }

    /** Refuses a non-empty output unless {@code overwrite}, then creates the staging folder. */
    static Staging create(Path output, boolean overwrite, CommitCalls calls) throws IOException {
        Path out = output.toAbsolutePath().normalize();
        checkReplaceable(out, overwrite);
        Path parent = out.getParent();
        Files.createDirectories(parent);
        return new Staging(out, createUnique(parent, "." + out.getFileName() + ".partial-"), overwrite, calls);
    }

    /**
     * A new folder named {@code prefix} and a random suffix. Not {@code Files.createTempDirectory}: that
     * makes it {@code rwx------} whatever the umask, and the folder becomes the output, which other users,
     * jobs and containers must be able to read as they could any folder {@code mkdir} makes.
     */
    private static Path createUnique(Path parent, String prefix) throws IOException {
        while (true) {
            try {
                return Files.createDirectory(parent.resolve(prefix + Long.toUnsignedString(RANDOM.nextLong(), 36)));
            } catch (FileAlreadyExistsException taken) {
                // another staging folder drew the same suffix: draw again
            }
        }
    }

    private static void checkReplaceable(Path out, boolean overwrite) throws IOException {
        if (!Files.exists(out) || overwrite) {
            return;
        }
        if (!Files.isDirectory(out)) {
            throw new OutputExistsException(out + " exists and is not a folder (use --force to replace it)");
        }
        try (Stream<Path> s = Files.list(out)) {
            if (s.findAny().isPresent()) {
                throw new OutputExistsException(out + " is not empty (use --force to replace it)");
            }
        }
    }

    Path dir() {
        return dir;
    }

    /**
     * Gives the staging folder the output's name. A free name or an empty folder is simply renamed
     * over; anything else (with {@code overwrite}) is swapped with the staging folder in one step, so
     * that the name never goes missing, and deleted once the swap is on disk.
     */
    synchronized void commit() throws IOException {
        if (finished.get()) {
            // Aborted (a cancel raced the commit): the staging folder is gone or going, and must not take the name.
            throw new IOException("the checkpoint was cancelled before its commit");
        }
        checkReplaceable(output, overwrite);
        calls.syncFolder(dir);
        boolean replacing = Files.exists(output, LinkOption.NOFOLLOW_LINKS) && !isEmptyFolder(output);
        if (replacing) {
            calls.exchange(dir, output);
        } else {
            calls.rename(dir, output);
        }
        committed.set(true);
        finished.set(true);
        calls.syncFolder(output.getParent());
        if (replacing) {
            try {
                // The staging name now holds the replaced checkpoint.
                deleteTree(dir);
            } catch (IOException ignored) {
                // The new checkpoint is committed; what is left is a hidden .partial folder, never the output.
            }
        }
    }

    private static boolean isEmptyFolder(Path p) throws IOException {
        if (!Files.isDirectory(p, LinkOption.NOFOLLOW_LINKS)) {
            return false;
        }
        try (Stream<Path> s = Files.list(p)) {
            return s.findAny().isEmpty();
        }
    }

    /**
     * Deletes the staging folder unless it was committed. Exclusive with {@link #commit()}: a cancel
     * that races the commit either comes first, and the commit then refuses, or finds it done.
     */
    synchronized void abort() {
        if (finished.compareAndSet(false, true)) {
            try {
                deleteTree(dir);
            } catch (IOException ignored) {
                // Best effort: a leftover hidden .partial folder never carries the output's name.
            }
        }
    }

    synchronized void abortIfNotCommitted() {
        if (!committed.get()) {
            abort();
        }
    }

    static void deleteTree(Path root) throws IOException {
        if (!Files.exists(root)) {
            return;
        }
        Files.walkFileTree(root, new SimpleFileVisitor<>() {
            @Override
            public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                Files.delete(file);
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult postVisitDirectory(Path d, IOException exc) throws IOException {
                Files.delete(d);
                return FileVisitResult.CONTINUE;
            }
        });
    }
}
