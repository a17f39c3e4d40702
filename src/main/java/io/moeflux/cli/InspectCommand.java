package io.moeflux.cli;

import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.tensor.TensorInfo;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

@Command(name = "inspect", header = "List tensors, dtypes, shapes and bytes, with totals per layer.",
        mixinStandardHelpOptions = true, versionProvider = Version.class, sortOptions = false,
        description = "Lists a checkpoint's tensors (name, dtype, shape, bytes) with totals per layer, per dtype and overall.")
final class InspectCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "PATH", description = "Checkpoint folder or .safetensors file.")
    String path;

    @Option(names = "--totals", description = "Print only the totals, not every tensor.")
    boolean totalsOnly;

    @Mixin
    JsonOutput json;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        CheckpointSource source = Endpoints.source(path);
        CheckpointDescriptor described = source.describe().block();
        // A source that cannot say up front (a stream) is read through once for its headers.
        List<TensorInfo> tensors = described.tensors().orElseGet(() -> source.tensors()
                .map(e -> {
                    TensorInfo info = e.tensor().info(e.fqn());
                    e.release();
                    return info;
                })
                .collectList()
                .block());
        Inventory inventory = Inventory.of(tensors);
        if (json.enabled) {
            JsonOutput.print(spec.commandLine().getOut(), inventory.json(path, !totalsOnly));
        } else {
            inventory.print(spec.commandLine().getOut(), path, !totalsOnly);
        }
        return ExitCodes.OK;
    }
}
