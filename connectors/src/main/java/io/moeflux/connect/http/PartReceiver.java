package io.moeflux.connect.http;

import io.moeflux.connect.InvalidCheckpointException;
import io.moeflux.connect.safetensors.FileWrites;
import io.moeflux.connect.safetensors.SafetensorsFormat;
import io.moeflux.tensor.Releasable;
import io.netty.buffer.ByteBuf;
import io.netty.util.ReferenceCountUtil;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Receives one part of a multi-part upload whole before anything of it is used: its body, safetensors blobs
 * back to back, goes to files, one complete safetensors file per blob, so the part can be dropped whole if
 * its body breaks and read like a rank's file of a sharded save once it has arrived. Only the length prefix
 * and header of each blob are looked at on the way (to find where the blob ends, and to refuse a header
 * past the limit before it is allocated); the rest is written as it comes, one chunk at a time, so the
 * memory a part holds is the body's read-ahead.
 */
public final class PartReceiver {
    private PartReceiver() {}

    /**
     * The part's blob files, {@code <name>-blob-00001.safetensors} and on, in {@code folder}, once the body
     * has ended on a blob boundary. On any error (the body breaking, a malformed blob) or a cancel, the
     * files written so far are deleted. {@code body} hands over its buffers; each is released once written.
     *
     * @param name     the part's name in file names and errors ({@code part-00002})
     * @param options  the header limit and allowance and the listener of {@link UploadSourceOptions}; its
     *                 spool folder is not used (the files go to {@code folder})
     */
    public static Mono<List<Path>> receive(Flux<ByteBuf> body, Path folder, String name, UploadSourceOptions options) {
        return Mono.defer(() -> {
            Writer writer = new Writer(folder, name, options);
            return body.doOnDiscard(ByteBuf.class, ReferenceCountUtil::safeRelease)
                    .doOnNext(writer::take)
                    .then(Mono.fromCallable(writer::finish))
                    .doFinally(signal -> writer.end());
        });
    }

    /**
     * Called on the body's thread; a cancel's {@link #end} may come from another, meanwhile, hence the
     * lock: a chunk taken after it is dropped rather than written to a new file.
     */
    private static final class Writer {
        private final Path folder;
        private final String name;
        private final UploadSourceOptions options;
        private final List<Path> files = new ArrayList<>();
        private final ByteBuffer lengthPrefix = ByteBuffer.allocate(8);
        private long bodyOffset;
        private String where;
        private FileChannel out;
        /** Bytes of the current blob on file, prefix and header included. */
        private long written;
        private byte[] headerJson;
        private int headerFilled;
        /** The current blob's whole size, once its header is read; -1 before. */
        private long blobSize = -1;
        private Releasable headerHold = Releasable.NONE;
        private boolean kept;
        private boolean abandoned;

        Writer(Path folder, String name, UploadSourceOptions options) {
            this.folder = folder;
            this.name = name;
            this.options = options;
        }

        synchronized void take(ByteBuf chunk) {
            try {
                if (abandoned) {
                    return;
                }
                options.listener().bytesReceived(chunk.readableBytes());
                while (chunk.isReadable()) {
                    if (out == null) {
                        startBlob();
                    }
                    if (lengthPrefix.hasRemaining()) {
                        int n = Math.min(lengthPrefix.remaining(), chunk.readableBytes());
                        chunk.readBytes(lengthPrefix.array(), lengthPrefix.position(), n);
                        lengthPrefix.position(lengthPrefix.position() + n);
                        if (!lengthPrefix.hasRemaining()) {
                            write(ByteBuffer.wrap(lengthPrefix.array()));
                            headerJson = new byte[Math.toIntExact(headerLength())];
                        }
                    } else if (blobSize < 0) {
                        int n = Math.min(headerJson.length - headerFilled, chunk.readableBytes());
                        chunk.readBytes(headerJson, headerFilled, n);
                        headerFilled += n;
                        if (headerFilled == headerJson.length) {
                            blobSize = SafetensorsFormat.parseHeader(headerJson, -1, where).totalSize();
                            write(ByteBuffer.wrap(headerJson));
                            headerJson = null;
                            headerHold.release();
                            headerHold = Releasable.NONE;
                        }
                    } else {
                        int n = (int) Math.min(blobSize - written, chunk.readableBytes());
                        write(chunk.nioBuffer(chunk.readerIndex(), n));
                        chunk.skipBytes(n);
                    }
                    if (blobSize >= 0 && written == blobSize) {
                        out.close();
                        out = null;
                    }
                }
            } catch (IOException e) {
                throw new UncheckedIOException("cannot spool " + name + " to " + folder + ": " + e.getMessage(), e);
            } finally {
                chunk.release();
            }
        }

        private void startBlob() throws IOException {
            Path file = folder.resolve(String.format("%s-blob-%05d.safetensors", name, files.size() + 1));
            where = name + " blob " + (files.size() + 1) + " (at body byte " + bodyOffset + ")";
            files.add(file);
            out = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
            lengthPrefix.clear();
            written = 0;
            headerFilled = 0;
            blobSize = -1;
        }

        private long headerLength() {
            long n = SafetensorsFormat.headerLength(ByteBuffer.wrap(lengthPrefix.array()), -1, where);
            headerHold = options.reserveHeader(n, where);
            return n;
        }

        private void write(ByteBuffer bytes) throws IOException {
            int n = bytes.remaining();
            FileWrites.write(out, bytes, written);
            written += n;
            bodyOffset += n;
            options.listener().bytesSpooled(n);
        }

        synchronized List<Path> finish() {
            if (out != null) {
                throw new InvalidCheckpointException(where + ": truncated: the body ends " + written + " bytes into the blob, "
                        + (blobSize < 0 ? "inside its header" : "short of its " + blobSize + " bytes"));
            }
            if (files.isEmpty()) {
                throw new InvalidCheckpointException(name + ": empty body: expected one or more safetensors blobs");
            }
            kept = true;
            return List.copyOf(files);
        }

        private void close() {
            headerHold.release();
            headerHold = Releasable.NONE;
            if (out != null) {
                try {
                    out.close();
                } catch (IOException ignored) {
                    // The files are deleted next: nothing written to them matters any more.
                }
            }
        }

        /** Closes the files, and deletes them unless the part arrived whole. */
        synchronized void end() {
            if (abandoned) {
                return;
            }
            abandoned = true;
            close();
            if (kept) {
                return;
            }
            for (Path f : files) {
                try {
                    Files.deleteIfExists(f);
                } catch (IOException ignored) {
                    // The part's folder is deleted with its checkpoint.
                }
            }
        }
    }
}
