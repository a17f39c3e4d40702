package io.moeflux.connect.safetensors;

import io.moeflux.connect.OutputExistsException;
import java.io.IOException;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryNotEmptyException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.security.SecureRandom;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.stream.Stream;

/**
 * A hidden folder beside the output where a checkpoint is written, renamed into place at commit so
 * that nothing with the final name exists until everything is written.
 */
final class Staging {
    private static final SecureRandom RANDOM = new SecureRandom();
    private final Path output;
    private final Path dir;
    private final boolean overwrite;
    private final AtomicBoolean committed = new AtomicBoolean();
    private final AtomicBoolean finished = new AtomicBoolean();

    private Staging(Path output, Path dir, boolean overwrite) {
        this.output = output;
        this.dir = dir;
        this.overwrite = overwrite;
    }

    /** Refuses a non-empty output unless {@code overwrite}, then creates the staging folder. */
    static Staging create(Path output, boolean overwrite) throws IOException {
        Path out = output.toAbsolutePath().normalize();
        checkReplaceable(out, overwrite);
        Path parent = out.getParent();
        Files.createDirectories(parent);
        return new Staging(out, createUnique(parent, "." + out.getFileName() + ".partial-"), overwrite);
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

    /** Moves the staging folder to the output; an existing output is swapped out first, then deleted. */
    void commit() throws IOException {
        checkReplaceable(output, overwrite);
        Path old = null;
        if (Files.exists(output)) {
            if (Files.isDirectory(output)) {
                try {
                    Files.delete(output);
                } catch (DirectoryNotEmptyException e) {
                    old = output.resolveSibling("." + output.getFileName() + ".old-" + ProcessHandle.current().pid()
                            + "-" + System.nanoTime());
                    move(output, old);
                }
            } else {
                Files.delete(output);
            }
        }
        move(dir, output);
        committed.set(true);
        finished.set(true);
        if (old != null) {
            deleteTree(old);
        }
    }

    private static void move(Path from, Path to) throws IOException {
        try {
            Files.move(from, to, StandardCopyOption.ATOMIC_MOVE);
        } catch (AtomicMoveNotSupportedException e) {
            throw new IOException("cannot rename " + from + " to " + to + " atomically: " + e.getMessage(), e);
        }
    }

    void abort() {
        if (finished.compareAndSet(false, true)) {
            try {
                deleteTree(dir);
            } catch (IOException ignored) {
                // Best effort: a leftover hidden .partial folder never carries the output's name.
            }
        }
    }

    void abortIfNotCommitted() {
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
