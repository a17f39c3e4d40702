package io.moeflux.cli;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.util.Properties;
import picocli.CommandLine.IVersionProvider;

/** {@code --version}: the project version, filtered into a resource at build time. */
final class Version implements IVersionProvider {
    static String current() {
        Properties p = new Properties();
        try (InputStream in = Version.class.getResourceAsStream("/moeflux-version.properties")) {
            if (in != null) {
                p.load(in);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return p.getProperty("version", "unknown");
    }

    @Override
    public String[] getVersion() {
        return new String[] {"moeflux " + current() + " (Java " + Runtime.version() + ")"};
    }
}
