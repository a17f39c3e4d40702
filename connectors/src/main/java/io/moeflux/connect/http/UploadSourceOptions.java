package io.moeflux.connect.http;

import io.moeflux.connect.HeaderTooLargeException;
import io.moeflux.tensor.Releasable;
import java.nio.file.Path;
import java.util.Objects;

/**
 * How an upload body is taken apart.
 *
 * @param spoolDir        where blobs' data sections are spooled (unlinked files: nothing is left behind)
 * @param maxHeaderBytes  the largest header accepted, refused before it is allocated
 * @param singleBlob      the body is one blob holding the whole checkpoint: its header is the checkpoint's
 *                        description, and a second blob is refused
 * @param headerAllowance what each blob's header may take of the memory that concurrent uploads share,
 *                        reserved from its length prefix until the blob ends
 * @param listener        told of the bytes and tensors received, for status and metrics
 * @param stagingBytes    memory per upload for tensors the consumer reads transposed, held column-blocked
 *                        instead of spooled (see {@link UploadSource.Delivery#transposed()}); past it they
 *                        are spooled, or the upload waits for a slab being written to free some
 */
public record UploadSourceOptions(Path spoolDir, long maxHeaderBytes, boolean singleBlob, HeaderAllowance headerAllowance,
        Listener listener, long stagingBytes) {
    public UploadSourceOptions {
        Objects.requireNonNull(spoolDir, "spoolDir");
        Objects.requireNonNull(headerAllowance, "headerAllowance");
        Objects.requireNonNull(listener, "listener");
    }

    /**
     * Room for a blob's header of {@code length} bytes, taken from the allowance until released; a header past
     * {@code maxHeaderBytes} is refused before anything is allocated for it (the length prefix is the first
     * thing a garbage body gets wrong).
     */
    Releasable reserveHeader(long length, String where) {
        if (length > maxHeaderBytes) {
            throw new HeaderTooLargeException(where + ": header length " + length + " exceeds this service's limit of "
                    + maxHeaderBytes + " bytes");
        }
        return headerAllowance.reserve(length, where);
    }

    /** Reserves room for a header of {@code bytes} (of the blob {@code where}), or throws to refuse it. */
    @FunctionalInterface
    public interface HeaderAllowance {
        HeaderAllowance UNLIMITED = (bytes, where) -> Releasable.NONE;

        Releasable reserve(long bytes, String where);
    }

    /** What an upload has received so far. */
    public interface Listener {
        Listener NONE = new Listener() {};

        default void bytesReceived(long n) {}

        /** Bytes written to the spool rather than streamed into place: what the upload costs the disk twice. */
        default void bytesSpooled(long n) {}

        default void tensorReceived() {}
    }
}
