package io.moeflux.connect;

import java.nio.file.FileSystemException;

/** The file system cannot hold an output file whole (disk full, quota reached or file too large). */
public class InsufficientSpaceException extends FileSystemException {
    public InsufficientSpaceException(String file, String reason) {
        super(file, null, reason);
    }
}
