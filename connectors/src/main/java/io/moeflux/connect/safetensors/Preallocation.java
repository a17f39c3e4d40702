package io.moeflux.connect.safetensors;

import io.moeflux.connect.InsufficientSpaceException;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;

/**
 * Reserves an output file's blocks before its bytes are written, with Linux's {@code fallocate(2)}.
 *
 * <p>Two reasons. A checkpoint that cannot fit fails when its files are created, with the space it
 * needs, instead of after gigabytes were received. And writes into reserved blocks are cheaper: ext4
 * otherwise reserves and maps each 4 KB block as it is first written (delayed allocation), which cost a
 * third of the kernel time of an upload's writes on the development VM.
 *
 * <p>Where {@code fallocate} is missing (other systems) or unsupported (some file systems), files stay
 * sparse and are written as before. Java has no API for it, hence the native call; the application's
 * manifest and the tests grant native access.
 */
final class Preallocation {
    private static final int O_WRONLY = 1;
    private static final int O_CLOEXEC = 0x80000;
    private static final int ENOSPC = 28;
    private static final int EFBIG = 27;
    private static final int EDQUOT = 122;

    private static final Optional<Calls> CALLS = System.getProperty("os.name", "").startsWith("Linux")
            ? Calls.lookUp() : Optional.empty();

    private Preallocation() {}

    /**
     * Reserves {@code bytes} for {@code file} (an existing file, which grows to that size), if the file
     * system supports it; returns whether it did.
     *
     * @throws InsufficientSpaceException when the file system cannot hold that many bytes
     */
    static boolean reserve(Path file, long bytes) throws IOException {
        if (CALLS.isEmpty() || bytes <= 0) {
            return false;
        }
        // Checked first because fallocate, short of space, fills the disk before it gives up.
        long usable = Files.getFileStore(file).getUsableSpace();
        if (usable < bytes) {
            throw noRoom(file, bytes, usable + " bytes free");
        }
        return CALLS.get().reserve(file, bytes);
    }

    private static InsufficientSpaceException noRoom(Path file, long bytes, String why) {
        return new InsufficientSpaceException(file.toString(), "no room for its " + bytes + " bytes (" + why + ")");
    }

    private record Calls(MethodHandle open, MethodHandle fallocate, MethodHandle close, StructLayout callState,
                         VarHandle errno) {
        // Restricted (native) calls are the point here; the manifest and the tests grant the access.
        @SuppressWarnings("restricted")
        static Optional<Calls> lookUp() {
            try {
                Linker linker = Linker.nativeLinker();
                var libc = linker.defaultLookup();
                StructLayout state = Linker.Option.captureStateLayout();
                Linker.Option captureErrno = Linker.Option.captureCallState("errno");
                // open(2) is variadic: its mode is a variadic argument (0 here, the file exists already).
                MethodHandle open = linker.downcallHandle(libc.findOrThrow("open"),
                        FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT),
                        captureErrno, Linker.Option.firstVariadicArg(2));
                MethodHandle fallocate = linker.downcallHandle(libc.findOrThrow("fallocate"),
                        FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT,
                                ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG),
                        captureErrno);
                MethodHandle close = linker.downcallHandle(libc.findOrThrow("close"),
                        FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT));
                VarHandle errno = state.varHandle(MemoryLayout.PathElement.groupElement("errno"));
                return Optional.of(new Calls(open, fallocate, close, state, errno));
            } catch (RuntimeException e) {
                // No libc with these symbols (or no native access): the files stay sparse.
                return Optional.empty();
            }
        }

        boolean reserve(Path file, long bytes) throws IOException {
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment state = arena.allocate(callState);
                MemorySegment path = arena.allocateFrom(file.toString());
                int fd = (int) open.invokeExact(state, path, O_WRONLY | O_CLOEXEC, 0);
                if (fd < 0) {
                    return false;
                }
                try {
                    int result = (int) fallocate.invokeExact(state, fd, 0, 0L, bytes);
                    if (result == 0) {
                        return true;
                    }
                    int error = (int) errno.get(state, 0L);
                    if (error == ENOSPC || error == EDQUOT || error == EFBIG) {
                        throw noRoom(file, bytes, error == EFBIG ? "larger than the file system allows"
                                : error == EDQUOT ? "disk quota exceeded" : "no space left on the device");
                    }
                    // EOPNOTSUPP and the like: the file system writes sparse files instead.
                    return false;
                } finally {
                    // Nothing was written through this descriptor, so a failed close loses nothing.
                    int ignored = (int) close.invokeExact(fd);
                }
            } catch (IOException | RuntimeException | Error e) {
                throw e;
            } catch (Throwable t) {
                throw new IllegalStateException("calling fallocate failed", t);
            }
        }
    }
}
