package io.moeflux.cli;

import io.moeflux.tensor.DType;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParameterException;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

@Command(name = "generate", header = "Write a synthetic Hy3 checkpoint (tiny, hy3-keys, hy3-bench).",
        mixinStandardHelpOptions = true, versionProvider = Version.class, sortOptions = false,
        description = "Writes a synthetic checkpoint in the on-disk Hy3 layout with pseudo-random weights and a config.json: "
                + "layer 0 dense, the other layers MoE, then the MTP layer(s).%n%nPresets:%n"
                + "  tiny       3 layers + MTP, 8 experts, hidden 32 (like hy3-tiny)%n"
                + "  hy3-keys   80 layers + MTP layer 80, 192 experts: the real 47,138 keys%n"
                + "  hy3-bench  real expert shapes (4096 x 1536), 1 MoE layer of 32 experts,%n"
                + "             1.55 GB; --experts 64 puts 2.4 GB into that one layer%n"
                + "%nThe size flags override the preset. The same flags and seed always give the same bytes.")
final class GenerateCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "OUT", description = "Folder to create; must be empty or absent unless --force.")
    String out;

    @Option(names = "--preset", paramLabel = "NAME", defaultValue = "tiny",
            description = "tiny, hy3-keys or hy3-bench (default: ${DEFAULT-VALUE}).")
    String preset;

    @Option(names = "--layers", paramLabel = "N", description = "num_hidden_layers: layer 0 dense, the rest MoE.")
    Integer layers;

    @Option(names = "--mtp-layers", paramLabel = "N", description = "MTP layers after the hidden layers (0 for none).")
    Integer mtpLayers;

    @Option(names = "--experts", paramLabel = "N", description = "Routed experts per MoE layer.")
    Integer experts;

    @Option(names = "--hidden", paramLabel = "N", description = "hidden_size.")
    Integer hidden;

    @Option(names = "--moe-inter", paramLabel = "N", description = "moe_intermediate_size (experts and shared expert).")
    Integer moeInter;

    @Option(names = "--dense-inter", paramLabel = "N", description = "intermediate_size of the dense layer 0.")
    Integer denseInter;

    @Option(names = "--vocab", paramLabel = "N", description = "vocab_size.")
    Integer vocab;

    @Option(names = "--seed", paramLabel = "S", description = "Seed of the pseudo-random weights.")
    Long seed;

    @Option(names = "--dtype", paramLabel = "TYPE", converter = Converters.TargetDType.class,
            description = "Type of the weights: bf16, f16 or f32 (router gate and expert bias are always F32).")
    DType dtype;

    @Mixin
    WriteOptions write;

    @Mixin
    JsonOutput json;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() {
        SyntheticHy3.Spec base;
        try {
            base = SyntheticHy3.Preset.parse(preset).spec;
        } catch (IllegalArgumentException e) {
            throw new ParameterException(spec.commandLine(), e.getMessage());
        }
        SyntheticHy3.Spec s;
        try {
            s = new SyntheticHy3.Spec(
                    layers != null ? layers : base.layers(),
                    mtpLayers != null ? mtpLayers : base.mtpLayers(),
                    experts != null ? experts : base.experts(),
                    hidden != null ? hidden : base.hidden(),
                    moeInter != null ? moeInter : base.moeInter(),
                    denseInter != null ? denseInter : base.denseInter(),
                    vocab != null ? vocab : base.vocab(),
                    dtype != null ? dtype : base.dtype(),
                    seed != null ? seed : base.seed());
        } catch (IllegalArgumentException e) {
            throw new ParameterException(spec.commandLine(), e.getMessage());
        }
        Transfer.Summary summary = Conversions.generate(new SyntheticHy3(s), preset, out, write.settings(),
                spec.commandLine().getErr());
        Reports.printSummary(spec.commandLine().getOut(), summary, json.enabled);
        return ExitCodes.OK;
    }
}
