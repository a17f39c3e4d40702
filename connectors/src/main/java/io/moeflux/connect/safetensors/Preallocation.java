package io.moeflux.connect.safetensors;

import io.moeflux.connect.InsufficientSpaceException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Reserves an output file's blocks before its bytes are written, with Linux's {@code fallocate(2)}.
 *
 * <p>Two reasons. A checkpoint that cannot fit fails when its files are created, with the space it
 * needs, instead of after gigabytes were received. And writes into reserved blocks are cheaper: ext4
 * otherwise reserves and maps each 4 KB block as it is first written (delayed allocation), which cost a
 * third of the kernel time of an upload's writes on the development VM.
 *
 * <p>Where {@code fallocate} is missing (other systems) or unsupported (some file systems), files stay
 * sparse and are written as before. Java has no API for it, hence the native call ({@link Libc}).
 */
final class Preallocation {
    private Preallocation() {}

    /**
     * Reserves {@code bytes} for {@code file} (an existing file, which grows to that size), if the file
     * system supports it; returns whether it did.
     *
     * @throws InsufficientSpaceException when the file system cannot hold that many bytes
     */
    static boolean reserve(Path file, long bytes) throws IOException {
        if (Libc.LINUX.isEmpty() || bytes <= 0) {
            return false;
        }
        // Checked first because fallocate, short of space, fills the disk before it gives up.
        long usable = Files.getFileStore(file).getUsableSpace();
        if (usable < bytes) {
            throw noRoom(file, bytes, usable + " bytes free");
        }
        Libc.Result result = Libc.LINUX.get().fallocate(file, bytes);
        if (!result.failed()) {
            return true;
        }
        return switch (result.errno()) {
            case Libc.ENOSPC -> throw noRoom(file, bytes, "no space left on the device");
            case Libc.EDQUOT -> throw noRoom(file, bytes, "disk quota exceeded");
            case Libc.EFBIG -> throw noRoom(file, bytes, "larger than the file system allows");
            // EOPNOTSUPP and the like: the file system writes sparse files instead.
            default -> false;
        };
    }

    private static InsufficientSpaceException noRoom(Path file, long bytes, String why) {
        return new InsufficientSpaceException(file.toString(), "no room for its " + bytes + " bytes (" + why + ")");
    }
}
