package io.moeflux.cli;

import io.moeflux.connect.kafka.KafkaGroupConversion;
import io.moeflux.connect.kafka.KafkaSinkOptions;
import io.moeflux.connect.kafka.KafkaSourceOptions;
import io.moeflux.hy3.Hy3Adapter;
import io.moeflux.hy3.Hy3Config;
import io.moeflux.hy3.Hy3Options;
import io.moeflux.pipeline.CommitSummary;
import io.moeflux.tensor.DType;
import java.io.IOException;
import java.util.concurrent.Callable;
import java.util.function.Function;
import java.util.regex.Pattern;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

/** {@code moeflux scale-out}: one member of a Kafka-to-Kafka conversion shared by a consumer group. */
@Command(name = "scale-out", header = "Share a Kafka-to-Kafka conversion among several moeflux processes.",
        mixinStandardHelpOptions = true, versionProvider = Version.class, sortOptions = false,
        description = "Runs one member of a conversion from one topic to another: start it in several processes with "
                + "the same --group and each converts the whole layers in the source partitions Kafka assigns it "
                + "(a layer never spans partitions). Together they publish one complete checkpoint; a member that "
                + "dies hands its partitions to the others. Every member exits once the converted checkpoint is "
                + "committed. Run as many members as the source topic has partitions, at most.")
final class ScaleOutCommand implements Callable<Integer> {
    enum Conversion { FROM_HF, TO_HF, COPY }

    @Parameters(index = "0", paramLabel = "CONVERSION", converter = ConversionName.class,
            description = "from-hf, to-hf or copy.")
    Conversion conversion;

    @Parameters(index = "1", paramLabel = "SRC", description = "kafka://HOST:PORT/TOPIC?checkpoint=ID (the id is required).")
    String source;

    @Parameters(index = "2", paramLabel = "DST", description = "kafka://HOST:PORT/TOPIC?checkpoint=ID")
    String destination;

    @Option(names = "--group", required = true, paramLabel = "NAME", description = "Consumer group the members share.")
    String group;

    @Option(names = "--dtype", paramLabel = "TYPE", defaultValue = "bf16", converter = Converters.TargetDType.class,
            description = "from-hf: type of the merged expert tensors (default: ${DEFAULT-VALUE}).")
    DType dtype;

    @Option(names = "--exclude-key-regex", converter = Converters.Regex.class, paramLabel = "RE", description = "to-hf: drop output keys that start with a match of RE.")
    Pattern excludeKeyRegex;

    @Option(names = "--lossy-lora", description = "from-hf: convert expert LoRA adapters exactly as the reference does, also where it drops tensors (an up_proj A that differs from gate_proj's, a layer whose LoRA groups are torn, per-expert LoRA given again in the fused form); without it such inputs are refused.")
    boolean lossyLora;

    @Mixin
    ModelOverrides model;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() throws IOException {
        KafkaGroupConversion member = new KafkaGroupConversion(
                KafkaSourceOptions.from(Endpoints.reachable(source)),
                KafkaSinkOptions.to(Endpoints.reachable(destination)),
                group);
        CommitSummary committed = Transfer.awaitCancellingOnExit(member.run(described -> {
            Hy3Options options = Hy3Options.DEFAULTS.withTargetDtype(dtype).withLossyLora(lossyLora);
            if (excludeKeyRegex != null) {
                options = options.withExcludeKeyRegex(excludeKeyRegex.pattern());
            }
            if (conversion == Conversion.COPY) {
                return new KafkaGroupConversion.Plan(described, Function.identity());
            }
            // The plan covers the whole checkpoint, so it refuses one without experts; a member then converts
            // the layers of its own partitions only, and some of them hold none (embeddings, norms).
            Hy3Config facts = model.resolve(described, source);
            Hy3Adapter whole = new Hy3Adapter(facts, options);
            Hy3Adapter part = new Hy3Adapter(facts, options.withAllowNoExperts(true));
            return conversion == Conversion.FROM_HF
                    ? new KafkaGroupConversion.Plan(described.tensors()
                            .map(infos -> described.withTensors(whole.planFromHf(infos))).orElse(described), part::fromHf)
                    : new KafkaGroupConversion.Plan(described.tensors()
                            .map(infos -> described.withTensors(whole.planToHf(infos))).orElse(described), part::toHf);
        }), "scale-out", spec.commandLine().getErr());
        spec.commandLine().getOut().println("scale-out " + conversion.name().toLowerCase(java.util.Locale.ROOT).replace('_', '-')
                + ": " + Human.count(committed.tensors()) + " tensors (" + Human.bytes(committed.bytes())
                + ") committed by the group -> " + committed.location());
        return ExitCodes.OK;
    }

    static final class ConversionName implements picocli.CommandLine.ITypeConverter<Conversion> {
        @Override
        public Conversion convert(String value) {
            return switch (value) {
                case "from-hf" -> Conversion.FROM_HF;
                case "to-hf" -> Conversion.TO_HF;
                case "copy" -> Conversion.COPY;
                default -> throw new picocli.CommandLine.TypeConversionException(
                        "expected from-hf, to-hf or copy, got '" + value + "'");
            };
        }
    }
}
