package io.moeflux.connect.safetensors;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
import java.nio.file.Path;
import java.util.Optional;

/**
 * The Linux system calls the sink needs and Java has no API for ({@code fallocate(2)},
 * {@code renameat2(2)}), called through FFM with {@code errno} captured. Empty on other systems or
 * where libc lacks the symbols; callers then say what they cannot do. The application's manifest and
 * the tests grant the native access.
 */
final class Libc {
    static final int ENOSPC = 28;
    static final int EFBIG = 27;
    static final int EDQUOT = 122;
    static final int EINVAL = 22;
    static final int ENOSYS = 38;

    private static final int O_WRONLY = 1;
    private static final int O_CLOEXEC = 0x80000;
    private static final int AT_FDCWD = -100;
    private static final int RENAME_EXCHANGE = 2;

    /** libc, on Linux. */
    static final Optional<Libc> LINUX = System.getProperty("os.name", "").startsWith("Linux")
            ? lookUp() : Optional.empty();

    /** What a call returned, and {@code errno} when that is negative. */
    record Result(int value, int errno) {
        boolean failed() {
            return value < 0;
        }
    }

    private final MethodHandle open;
    private final MethodHandle fallocate;
    private final MethodHandle close;
    private final MethodHandle renameat2;
    private final StructLayout callState;
    private final VarHandle errno;

    private Libc(MethodHandle open, MethodHandle fallocate, MethodHandle close, MethodHandle renameat2,
                 StructLayout callState, VarHandle errno) {
        this.open = open;
        this.fallocate = fallocate;
        this.close = close;
        this.renameat2 = renameat2;
        this.callState = callState;
        this.errno = errno;
    }

    // Restricted (native) calls are the point here; the manifest and the tests grant the access.
    @SuppressWarnings("restricted")
    private static Optional<Libc> lookUp() {
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
            // glibc before 2.28 has no renameat2: exchange() then answers ENOSYS, as an old kernel would.
            MethodHandle renameat2 = libc.find("renameat2").map(symbol -> linker.downcallHandle(symbol,
                    FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.ADDRESS,
                            ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT),
                    captureErrno)).orElse(null);
            VarHandle errno = state.varHandle(MemoryLayout.PathElement.groupElement("errno"));
            return Optional.of(new Libc(open, fallocate, close, renameat2, state, errno));
        } catch (RuntimeException e) {
            // No libc with these symbols, or no native access.
            return Optional.empty();
        }
    }

    /** {@code fallocate(fd, 0, 0, bytes)} on {@code file}, opened for writing just for the call. */
    Result fallocate(Path file, long bytes) {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(callState);
            int fd = (int) open.invokeExact(state, arena.allocateFrom(file.toString()), O_WRONLY | O_CLOEXEC, 0);
            if (fd < 0) {
                return new Result(fd, (int) errno.get(state, 0L));
            }
            try {
                int result = (int) fallocate.invokeExact(state, fd, 0, 0L, bytes);
                return new Result(result, result < 0 ? (int) errno.get(state, 0L) : 0);
            } finally {
                // Nothing was written through this descriptor, so a failed close loses nothing.
                int ignored = (int) close.invokeExact(fd);
            }
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("calling fallocate failed", t);
        }
    }

    /** {@code renameat2(a, b, RENAME_EXCHANGE)}: both names stay taken throughout, each now naming the other's file. */
    Result exchange(Path a, Path b) {
        if (renameat2 == null) {
            return new Result(-1, ENOSYS);
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(callState);
            int result = (int) renameat2.invokeExact(state, AT_FDCWD, arena.allocateFrom(a.toString()),
                    AT_FDCWD, arena.allocateFrom(b.toString()), RENAME_EXCHANGE);
            return new Result(result, result < 0 ? (int) errno.get(state, 0L) : 0);
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("calling renameat2 failed", t);
        }
    }
}
