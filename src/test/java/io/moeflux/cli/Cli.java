package io.moeflux.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import picocli.CommandLine;

/** Runs the configured command line as {@code main} does, capturing stdout and stderr. */
record Cli(int exitCode, String out, String err) {
    static final Path REFERENCE_VECTORS = Path.of("../pipeline/src/test/resources/reference-vectors");

    /** A private copy of the reference vector {@code hy3-tiny/hf} in {@code to}: a test may break it, or check it is untouched. */
    static Path copyOfTinyHf(Path to) throws IOException {
        Files.createDirectories(to);
        try (Stream<Path> files = Files.list(REFERENCE_VECTORS.resolve("hy3-tiny/hf"))) {
            for (Path f : files.toList()) {
                Files.copy(f, to.resolve(f.getFileName()));
            }
        }
        return to;
    }

    static Cli run(Object... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        CommandLine cl = Main.commandLine();
        cl.setOut(new PrintWriter(out, true));
        cl.setErr(new PrintWriter(err, true));
        String[] strings = new String[args.length];
        for (int i = 0; i < args.length; i++) {
            strings[i] = args[i].toString();
        }
        int code = cl.execute(strings);
        return new Cli(code, out.toString(), err.toString());
    }

    JsonNode json() {
        try {
            return new ObjectMapper().readTree(out);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
