package io.moeflux.cli;

import io.moeflux.hy3.Hy3Options;
import java.util.concurrent.Callable;
import java.util.regex.Pattern;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

@Command(name = "to-hf", header = "Convert a native checkpoint back to the on-disk Hy3 layout.",
        mixinStandardHelpOptions = true, versionProvider = Version.class, sortOptions = false,
        description = "Converts an Automodel native checkpoint back to the on-disk Hy3 layout: splits each layer's "
                + "gate_and_up_projs and down_projs into per-expert weights (named model.layers.L.mlp.experts.E.*) "
                + "and renames router and shared-expert keys back. No dtype cast in this direction. Model facts "
                + "come from IN/config.json; the flags below override them.")
final class ToHfCommand implements Callable<Integer> {
    @Parameters(index = "0", paramLabel = "IN", description = "Native checkpoint folder or .safetensors file.")
    String in;

    @Parameters(index = "1", paramLabel = "OUT", description = "Folder to create; must be empty or absent unless --force.")
    String out;

    @Option(names = "--exclude-key-regex", converter = Converters.Regex.class, paramLabel = "RE",
            description = "Drop output keys that start with a match of RE (Python re.match), e.g. '^custom\\.'.")
    Pattern excludeKeyRegex;

    @Option(names = "--per-tensor",
            description = "Convert one tensor at a time with convertSingleTensorToHf (the save-hook path); same output.")
    boolean perTensor;

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
        Endpoints.requireApart(spec.commandLine(), in, out);
        Hy3Options options = Hy3Options.DEFAULTS.withAllowNoExperts(allowNoExperts);
        if (excludeKeyRegex != null) {
            options = options.withExcludeKeyRegex(excludeKeyRegex.pattern());
        }
        Transfer.Summary summary = Conversions.toHf(in, out, model, options, perTensor, write.settings(),
                spec.commandLine().getErr());
        Reports.printSummary(spec.commandLine().getOut(), summary, json.enabled);
        return ExitCodes.OK;
    }
}
