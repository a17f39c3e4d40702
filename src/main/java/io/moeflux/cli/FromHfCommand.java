package io.moeflux.cli;

import io.moeflux.hy3.Hy3Options;
import io.moeflux.tensor.DType;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

@Command(name = "from-hf", header = "Convert an on-disk Hy3 checkpoint to the native layout.",
        mixinStandardHelpOptions = true, versionProvider = Version.class, sortOptions = false,
        description = "Converts an on-disk Hy3 checkpoint (Hugging Face layout) to Automodel's native layout: drops "
                + "MTP layers, renames router and shared-expert keys, drops *_scale_inv keys and merges each "
                + "layer's experts into gate_and_up_projs [n, hidden, 2*inter] and down_projs [n, inter, hidden]. "
                + "Model facts come from IN/config.json; the flags below override them.")
final class FromHfCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "IN", description = "Checkpoint folder (shards, index, config.json) or .safetensors file.")
    String in;

    @Parameters(index = "1", paramLabel = "OUT", description = "Folder to create; must be empty or absent unless --force.")
    String out;

    @Option(names = "--ep-size", paramLabel = "N", defaultValue = "1",
            description = "Expert-parallel world size: keep only this rank's share of experts (default: ${DEFAULT-VALUE}).")
    int epSize;

    @Option(names = "--ep-rank", paramLabel = "R", defaultValue = "0", description = "Expert-parallel rank, 0 <= R < N (default: ${DEFAULT-VALUE}).")
    int epRank;

    @Option(names = "--dtype", paramLabel = "TYPE", defaultValue = "bf16", converter = Converters.TargetDType.class,
            description = "Type of the merged expert tensors: bf16, f16 or f32 (default: ${DEFAULT-VALUE}); other tensors keep theirs.")
    DType dtype;

    @Option(names = "--lossy-lora", description = "from-hf: convert expert LoRA adapters exactly as the reference does, also where it drops tensors (an up_proj A that differs from gate_proj's, a layer whose LoRA groups are torn, per-expert LoRA given again in the fused form); without it such inputs are refused.")
    boolean lossyLora;

    @Option(names = "--allow-no-experts", description = "Convert even when no tensor is an expert tensor of the input's "
            + "layout; by default that is refused, as it is usually a checkpoint of the other layout, which would pass "
            + "through unchanged.")
    boolean allowNoExperts;

    @Mixin
    ModelOverrides model;

    @Mixin
    WriteOptions write;

    @Mixin
    JsonOutput json;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws Exception {
        if (epSize < 1 || epRank < 0 || epRank >= epSize) {
            throw new ParameterException(spec.commandLine(),
                    "need --ep-size >= 1 and 0 <= --ep-rank < --ep-size, got --ep-size " + epSize + " --ep-rank " + epRank);
        }
        Endpoints.requireApart(spec.commandLine(), in, out);
        Hy3Options options = Hy3Options.DEFAULTS.withTargetDtype(dtype).withExpertParallel(epSize, epRank).withLossyLora(lossyLora)
                .withAllowNoExperts(allowNoExperts);
        Transfer.Summary summary = Conversions.fromHf(in, out, model, options, write.settings(), spec.commandLine().getErr());
        Reports.printSummary(spec.commandLine().getOut(), summary, json.enabled);
        return ExitCodes.OK;
    }
}
