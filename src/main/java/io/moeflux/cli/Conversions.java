package io.moeflux.cli;

import io.moeflux.hy3.Hy3Adapter;
import io.moeflux.hy3.Hy3Options;
import io.moeflux.hy3.MergedOutput;
import io.moeflux.pipeline.CheckpointDescriptor;
import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
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
                sink -> adapter.fromHf(source.tensors(), sink.placesPieces() ? MergedOutput.SLAB_PIECES : MergedOutput.WHOLE), err);
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
        Flux<TensorEvent> events = perTensor
                ? Stages.releaseOnDiscard(source.tensors().transform(adapter.toHfInputCheck())
                        .concatMapIterable(e -> adapter.convertSingleTensorToHf(e.fqn(), e.tensor()), 1))
                : adapter.toHf(source.tensors());
        return Transfer.run("to-hf", in, described, out, settings, planned, sink -> events, err);
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
        return Transfer.run("copy", from, described, to, settings, planned, sink -> source.tensors(), err);
    }

    static Transfer.Summary generate(SyntheticHy3 checkpoint, String presetName, String out,
            Endpoints.SinkSettings settings, PrintWriter err) {
        CheckpointDescriptor described = checkpoint.describe().block();
        return Transfer.run("generate", "preset " + presetName, CheckpointDescriptor.UNKNOWN, out, settings, described,
                sink -> checkpoint.tensors(), err);
    }
}
