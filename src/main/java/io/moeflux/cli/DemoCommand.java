package io.moeflux.cli;

import io.moeflux.connect.safetensors.ModelConfigJson;
import io.moeflux.hy3.Hy3Keys;
import io.moeflux.hy3.Hy3Options;
import java.io.IOException;
import java.io.PrintWriter;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

@Command(name = "demo", header = "Round-trip a synthetic checkpoint and check it is bit-exact.",
        mixinStandardHelpOptions = true, versionProvider = Version.class, sortOptions = false,
        description = "The main job on a small example: generates a synthetic Hy3 checkpoint (preset tiny), converts "
                + "it to the native layout (from-hf) and back (to-hf), and checks that the round trip gives back "
                + "the input, less its MTP layer, bit for bit. Works in a temporary folder that is removed "
                + "afterwards.")
final class DemoCommand implements Callable<Integer> {
    @Option(names = "--keep", paramLabel = "DIR",
            description = "Work in DIR (created, must be empty or absent) and keep the checkpoints there.")
    Path keep;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws IOException {
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter err = spec.commandLine().getErr();
        Path dir = keep != null ? Files.createDirectories(keep) : Files.createTempDirectory("moeflux-demo-");
        try {
            return run(dir, out, err);
        } finally {
            if (keep == null) {
                deleteTree(dir);
            }
        }
    }

    private int run(Path dir, PrintWriter out, PrintWriter err) throws IOException {
        String hf = dir.resolve("hf").toString();
        String nativeDir = dir.resolve("native").toString();
        String roundTrip = dir.resolve("hf-roundtrip").toString();
        Endpoints.SinkSettings settings = Endpoints.SinkSettings.DEFAULTS;
        ModelOverrides fromConfig = new ModelOverrides();

        out.println("moeflux demo: a synthetic Hy3 checkpoint through from-hf and to-hf, in " + dir);
        Transfer.Summary generated = Conversions.generate(new SyntheticHy3(SyntheticHy3.Preset.TINY.spec), "tiny", hf, settings, err);
        step(out, "generate", "preset tiny: 3 layers + MTP layer 3, 8 experts", generated);
        Transfer.Summary toNative = Conversions.fromHf(hf, nativeDir, fromConfig, Hy3Options.DEFAULTS, settings, err);
        step(out, "from-hf", "MTP layer dropped, keys renamed, experts merged", toNative);
        Transfer.Summary back = Conversions.toHf(nativeDir, roundTrip, fromConfig, Hy3Options.DEFAULTS, false, settings, err);
        step(out, "to-hf", "experts split, keys renamed back", back);

        int layers = ModelConfigJson.read(Path.of(hf)).numHiddenLayers();
        CheckpointComparison.Report report = Transfer.awaitCancellingOnExit(CheckpointComparison.compare(
                Endpoints.source(hf), Endpoints.source(roundTrip), key -> !Hy3Keys.isMtpKey(key, layers)), "demo",
                spec.commandLine().getErr());
        if (report.identical()) {
            out.println("round trip: bit-exact (" + Human.count(report.equalTensors()) + " tensors, "
                    + Human.count(report.equalBytes()) + " bytes equal to the input less its MTP layer)");
            return ExitCodes.OK;
        }
        Reports.printComparison(out, hf, roundTrip, report, false);
        out.println("round trip: NOT bit-exact");
        return ExitCodes.DIFFERENT;
    }

    private static void step(PrintWriter out, String name, String what, Transfer.Summary s) {
        out.printf("  %-9s %6s tensors %10s  %8s  %s%n", name, Human.count(s.committed().tensors()),
                Human.bytes(s.committed().bytes()), Human.duration(s.seconds()), what);
        out.flush();
    }

    private static void deleteTree(Path root) throws IOException {
        Files.walkFileTree(root, new SimpleFileVisitor<>() {
            @Override
            public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                Files.delete(file);
                return FileVisitResult.CONTINUE;
            }

            @Override
            public FileVisitResult postVisitDirectory(Path d, IOException exc) throws IOException {
                if (exc != null) {
                    throw exc;
                }
                Files.delete(d);
                return FileVisitResult.CONTINUE;
            }
        });
    }
}
