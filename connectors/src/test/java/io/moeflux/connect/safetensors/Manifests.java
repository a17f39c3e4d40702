package io.moeflux.connect.safetensors;

import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.Shapes;
import java.io.IOException;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.Map;
import java.util.TreeMap;

/** Per-tensor manifests (dtype, shape, sha256 of the bytes), as ../shared/tools/st-manifest.py prints them. */
public final class Manifests {
    private Manifests() {}

    public static Map<String, String> of(Path checkpoint) throws IOException {
        Map<String, String> out = new TreeMap<>();
        for (TensorEvent e : SafetensorsSource.open(checkpoint).tensors().collectList().block()) {
            out.put(e.fqn(), describe(e));
            e.release();
        }
        return out;
    }

    public static String describe(TensorEvent e) {
        try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            e.tensor().writeTo(chunk -> sha.update(chunk.asByteBuffer()));
            return e.tensor().dtype() + Shapes.format(e.tensor().shape()) + " " + HexFormat.of().formatHex(sha.digest());
        } catch (IOException | NoSuchAlgorithmException ex) {
            throw new IllegalStateException(ex);
        }
    }
}
