package io.moeflux.cli;

import io.moeflux.hy3.Hy3Adapter;
import io.moeflux.hy3.Hy3Options;
import io.moeflux.hy3.MergedOutput;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSink;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.SpillArea;
import java.io.IOException;
import java.io.PrintWriter;
import reactor.core.publisher.Flux;

/**
 * The work behind the writing commands, shared by them and by {@code demo}: open the source, read
 * the model facts, plan the output (which already fails on missing experts, before any byte moves),
 * then stream the conversion into the sink.
 */
final class Conversions {
    private Conversions() {}

    static Transfer.Summary fromHf(String in, String out, ModelOverrides model, Hy3Options options,
            Endpoints.SinkSettings settings, PrintWriter err) throws IOException {
        CheckpointSource source = Endpoints.source(in);
        CheckpointDescriptor described = source.describe().block();
        Hy3Adapter adapter = new Hy3Adapter(model.resolve(described, in), options);
        CheckpointDescriptor planned = described.tensors()
                .map(infos -> described.withTensors(adapter.planFromHf(infos)))
                .orElse(described);
        // A sink that places pieces gets each expert's slab as soon as its weights are in, not whole layers.
        return Transfer.run("from-hf", in, described, out, settings, planned,
                sink -> adapter.fromHf(tensorsFor(source, sink), sink.placesPieces() ? MergedOutput.SLAB_PIECES : MergedOutput.WHOLE),
                err);
    }

    /**
     * @param perTensor convert with {@link Hy3Adapter#convertSingleTensorToHf} one tensor at a time (the
     *                  path of save hooks that see tensors one by one) instead of the stream stage; the
     *                  output is the same
     */
    static Transfer.Summary toHf(String in, String out, ModelOverrides model, Hy3Options options, boolean perTensor,
            Endpoints.SinkSettings settings, PrintWriter err) throws IOException {
        CheckpointSource source = Endpoints.source(in);
        CheckpointDescriptor described = source.describe().block();
        Hy3Adapter adapter = new Hy3Adapter(model.resolve(described, in), options);
        CheckpointDescriptor planned = described.tensors()
                .map(infos -> described.withTensors(adapter.planToHf(infos)))
                .orElse(described);
        return Transfer.run("to-hf", in, described, out, settings, planned, sink -> perTensor
                ? Stages.releaseOnDiscard(tensorsFor(source, sink).transform(adapter.toHfInputCheck())
                        .concatMapIterable(e -> adapter.convertSingleTensorToHf(e.fqn(), e.tensor()), 1))
                : adapter.toHf(tensorsFor(source, sink)), err);
    }

    /**
     * @param bySize lay the output out by {@code settings}' shard size even when the checkpoint assigns each
     *               tensor its file
     */
    static Transfer.Summary copy(String from, String to, Endpoints.SinkSettings settings, boolean bySize, PrintWriter err)
            throws IOException {
        CheckpointSource source = Endpoints.sourceFor(from, to);
        CheckpointDescriptor described = source.describe().block();
        CheckpointDescriptor planned = bySize ? described.withoutOutputFiles() : described;
        return Transfer.run("copy", from, described, to, settings, planned, sink -> tensorsFor(source, sink), err);
    }

    /**
     * The source's tensors as {@code sink} takes them: pieces (of a sharded save) as they are for a sink that
     * places pieces, whole otherwise (a Kafka checkpoint published whole), each gathered from its pieces in
     * a spill file of the temporary folder as they are read.
     */
    private static Flux<TensorEvent> tensorsFor(CheckpointSource source, CheckpointSink sink) {
        return sink.placesPieces() ? source.tensors() : source.tensors().transform(Stages.gatherPieces(SpillArea.inTempDir()));
    }

    static Transfer.Summary generate(SyntheticHy3 checkpoint, String presetName, String out,
            Endpoints.SinkSettings settings, PrintWriter err) {
        CheckpointDescriptor described = checkpoint.describe().block();
        return Transfer.run("generate", "preset " + presetName, CheckpointDescriptor.UNKNOWN, out, settings, described,
                sink -> checkpoint.tensors(), err);
    }
}
