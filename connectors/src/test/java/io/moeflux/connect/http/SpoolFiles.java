package io.moeflux.connect.http;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;

/** What an upload's spool folder still holds, for tests that check an upload left nothing behind. */
public final class SpoolFiles {
    private SpoolFiles() {}

    /**
     * Spool files this process still has open or mapped, as {@code /proc/self} shows them (they are
     * unlinked as soon as they are opened, so the folder itself is always empty), plus anything that is
     * in the folder: after an upload ends, all of it must be gone.
     */
    public static List<String> inUse(Path spoolDir) throws IOException {
        if (!Files.exists(spoolDir)) {
            return List.of();
        }
        String dir = spoolDir.toRealPath() + "/";
        List<String> inUse = new ArrayList<>();
        for (String line : Files.readAllLines(Path.of("/proc/self/maps"))) {
            if (line.contains(dir)) {
                inUse.add("mapped: " + line);
            }
        }
        try (Stream<Path> fds = Files.list(Path.of("/proc/self/fd"))) {
            for (Path fd : fds.toList()) {
                try {
                    String target = Files.readSymbolicLink(fd).toString();
                    if (target.startsWith(dir)) {
                        inUse.add("open: " + target);
                    }
                } catch (IOException closedMeanwhile) {
                    // The descriptor was closed between listing and reading it: not in use.
                }
            }
        }
        try (Stream<Path> files = Files.list(spoolDir)) {
            files.forEach(f -> inUse.add("file: " + f));
        }
        return inUse;
    }
}
