package io.moeflux.connect.safetensors;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;

/**
 * The file-system calls that make a commit durable and atomic. They are one seam so that the order a
 * commit makes them in (every file synced, then its folder, then the rename, then the parent) can be
 * recorded by a test; {@link #SYSTEM} makes them.
 */
interface CommitCalls {
    /** Flushes a written file's bytes, and the size that reaches them, to the device. */
    void syncFile(Path file, FileChannel channel) throws IOException;

    /** Flushes a folder's entries (the names created or renamed in it) to the device. */
    void syncFolder(Path folder) throws IOException;

    /** Renames {@code from} to the name {@code to}, which is free or an empty folder, in one step. */
    void rename(Path from, Path to) throws IOException;

    /** Swaps two existing names in one step, so that neither is ever missing. */
    void exchange(Path a, Path b) throws IOException;

    CommitCalls SYSTEM = new CommitCalls() {
        @Override
        public void syncFile(Path file, FileChannel channel) throws IOException {
            // fdatasync: the data and the size; the times it skips are not what a reader needs.
            channel.force(false);
        }

        @Override
        public void syncFolder(Path folder) throws IOException {
            // On Linux a folder opens for reading, and forcing that channel fsyncs the folder.
            try (FileChannel dir = FileChannel.open(folder, StandardOpenOption.READ)) {
                dir.force(true);
            }
        }

        @Override
        public void rename(Path from, Path to) throws IOException {
            try {
                Files.move(from, to, StandardCopyOption.ATOMIC_MOVE);
            } catch (AtomicMoveNotSupportedException e) {
                throw new IOException("cannot rename " + from + " to " + to + " atomically: " + e.getMessage(), e);
            }
        }

        @Override
        public void exchange(Path a, Path b) throws IOException {
            if (Libc.LINUX.isEmpty()) {
                throw new IOException("cannot replace " + b + " atomically: that needs Linux's renameat2"
                        + " (RENAME_EXCHANGE); remove it first or choose another output");
            }
            Libc.Result result = Libc.LINUX.get().exchange(a, b);
            if (result.failed()) {
                String why = switch (result.errno()) {
                    case Libc.EINVAL -> "its file system cannot swap two names in one step (renameat2 RENAME_EXCHANGE)";
                    case Libc.ENOSYS -> "this kernel or libc has no renameat2";
                    default -> "renameat2 failed with errno " + result.errno();
                };
                throw new IOException("cannot replace " + b + " atomically: " + why
                        + "; remove it first or choose another output");
            }
        }
    };

    /** These calls without the syncs: the commit stays atomic, but only as durable as the page cache. */
    default CommitCalls withoutSyncs() {
        CommitCalls calls = this;
        return new CommitCalls() {
            @Override
            public void syncFile(Path file, FileChannel channel) {}

            @Override
            public void syncFolder(Path folder) {}

            @Override
            public void rename(Path from, Path to) throws IOException {
                calls.rename(from, to);
            }

            @Override
            public void exchange(Path a, Path b) throws IOException {
                calls.exchange(a, b);
            }
        };
    }
}
