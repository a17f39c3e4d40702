package io.moeflux.hy3;

import io.moeflux.hy3.Hy3Keys.GroupedLora;
import io.moeflux.hy3.Hy3Keys.LoraLayer;
import io.moeflux.hy3.Hy3Keys.LoraMatrix;
import io.moeflux.hy3.Hy3Keys.Projection;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.Box;
import io.moeflux.tensor.RefCounted;
import io.moeflux.tensor.Releasable;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.Tensor;
import io.moeflux.tensor.TransposedSliceTensor;
import java.util.ArrayList;
import java.util.List;

/**
 * The expert split of to-hf: one grouped native tensor becomes per-expert on-disk tensors.
 *
 * <p>{@code gate_and_up_projs [n, hidden, 2*inter]} gives, per expert, {@code gate_proj = w[e][:, :inter]^T}
 * and {@code up_proj = w[e][:, inter:]^T}; {@code down_projs [n, inter, hidden]} (only when 3-D with
 * {@code shape[1] == inter}, as the mixin checks) gives {@code down_proj = w[e]^T}; the four grouped
 * expert LoRA tensors give one LoRA pair per expert and projection. The splits are lazy views that share
 * the grouped tensor; it is freed when the last of them is released.
 */
final class ExpertSplit {
    private final int numExperts;
    private final int inter;

    ExpertSplit(Hy3Config config) {
        this.numExperts = config.numExperts();
        this.inter = config.moeIntermediateSize();
    }

    /** The split of {@code event}, or the event itself when it is not a grouped expert tensor. */
    List<TensorEvent> split(TensorEvent event) {
        String fqn = event.fqn();
        long[] shape = event.wholeShape();
        boolean gateUp = Hy3Keys.isGroupedGateUp(fqn);
        boolean down = !gateUp && Hy3Keys.isGroupedDown(fqn) && shape.length == 3 && shape[1] == inter;
        if (!gateUp && !down) {
            var lora = Hy3Keys.parseGroupedLora(fqn);
            return lora.isPresent() ? splitLora(event, lora.get()) : List.of(event);
        }
        String layer = Hy3Keys.layerOf(fqn).orElse(null);
        if (layer == null) {
            event.release();
            throw new IllegalArgumentException("grouped expert tensor " + fqn + " names no layers.N");
        }
        if (shape.length != 3 || shape[0] != numExperts) {
            event.release();
            throw new IllegalArgumentException("grouped expert tensor " + fqn + " has shape " + Shapes.format(shape)
                    + ": expected first dimension to be num_experts = " + numExperts);
        }
        if (gateUp && shape[2] != 2L * inter) {
            event.release();
            throw new IllegalArgumentException("grouped expert tensor " + fqn + " has shape " + Shapes.format(shape)
                    + ": expected last dimension 2 * moe_intermediate_size = " + 2L * inter);
        }
        List<Slice> slices = new ArrayList<>(gateUp ? 2 * numExperts : numExperts);
        for (int e = 0; e < numExperts; e++) {
            if (gateUp) {
                slices.add(new Slice(Hy3Keys.splitExpertKey(layer, e, Projection.GATE), e, 0, inter));
                slices.add(new Slice(Hy3Keys.splitExpertKey(layer, e, Projection.UP), e, inter, inter));
            } else {
                slices.add(new Slice(Hy3Keys.splitExpertKey(layer, e, Projection.DOWN), e, 0, shape[2]));
            }
        }
        return cut(event, slices);
    }

    /**
     * A grouped expert LoRA tensor becomes one LoRA pair per expert and projection, under the key's own
     * prefix: A {@code [E, hidden, r]} gives gate_proj's and up_proj's {@code lora_A = A[e]^T} (the same
     * bytes twice); B {@code [E, r, 2*inter]} gives gate's {@code B[e][:, :inter]^T} and up's
     * {@code B[e][:, inter:]^T}; the down pair is {@code dA[e]^T} and {@code dB[e]^T}. No type changes.
     */
    private List<TensorEvent> splitLora(TensorEvent event, Hy3Keys.GroupedLoraKey key) {
        long[] shape = event.wholeShape();
        if (shape.length != 3) {
            event.release();
            throw new IllegalArgumentException("grouped expert LoRA tensor " + event.fqn() + " has shape " + Shapes.format(shape)
                    + ": expected 3 dimensions [num_experts, in, out]");
        }
        if (shape[0] != numExperts) {
            event.release();
            throw new IllegalArgumentException("grouped expert LoRA tensor " + event.fqn() + " has " + shape[0]
                    + " experts in its first dimension, but num_experts = " + numExperts);
        }
        if (key.kind() == GroupedLora.GATE_AND_UP_B && shape[2] != 2L * inter) {
            event.release();
            throw new IllegalArgumentException("grouped expert LoRA tensor " + event.fqn() + " has shape " + Shapes.format(shape)
                    + ": expected last dimension 2 * moe_intermediate_size = " + 2L * inter);
        }
        LoraLayer layer = key.layer();
        List<Slice> slices = new ArrayList<>();
        for (int e = 0; e < numExperts; e++) {
            switch (key.kind()) {
                case GATE_AND_UP_A -> {
                    slices.add(new Slice(layer.perExpert(e, Projection.GATE, LoraMatrix.A), e, 0, shape[2]));
                    slices.add(new Slice(layer.perExpert(e, Projection.UP, LoraMatrix.A), e, 0, shape[2]));
                }
                case GATE_AND_UP_B -> {
                    slices.add(new Slice(layer.perExpert(e, Projection.GATE, LoraMatrix.B), e, 0, inter));
                    slices.add(new Slice(layer.perExpert(e, Projection.UP, LoraMatrix.B), e, inter, inter));
                }
                case DOWN_A -> slices.add(new Slice(layer.perExpert(e, Projection.DOWN, LoraMatrix.A), e, 0, shape[2]));
                case DOWN_B -> slices.add(new Slice(layer.perExpert(e, Projection.DOWN, LoraMatrix.B), e, 0, shape[2]));
            }
        }
        return cut(event, slices);
    }

    /** {@code grouped[expert][:, colStart:colStart+colCount]^T} under {@code name}. */
    private record Slice(String name, int expert, long colStart, long colCount) {}

    /**
     * Lazy views of what {@code event} holds of each slice, sharing its tensor: it is freed when the last of
     * them is released. A piece of the grouped tensor (a range of experts, rows or columns) gives the pieces
     * of the per-expert weights it covers: rows {@code [r0, r1)} and columns {@code [c0, c1)} of expert
     * {@code e} are columns {@code [r0, r1)} and rows {@code [c0, c1)} of the weights transposed from it.
     */
    private static List<TensorEvent> cut(TensorEvent event, List<Slice> slices) {
        Tensor grouped = event.tensor();
        Box box = event.box();
        long rows = event.wholeShape()[1];
        RefCounted shared = RefCounted.onLastRelease(grouped::release);
        Releasable ownerHandle = shared.retain();
        List<TensorEvent> out = new ArrayList<>();
        try {
            for (Slice s : slices) {
                if (s.expert() < box.offset(0) || s.expert() >= box.end(0)) {
                    continue;
                }
                long c0 = Math.max(s.colStart(), box.offset(2));
                long c1 = Math.min(s.colStart() + s.colCount(), box.end(2));
                if (c1 <= c0 && s.colCount() > 0) {
                    continue;
                }
                Tensor view = new TransposedSliceTensor(grouped, shared.retain(), s.expert() - box.offset(0), c0 - box.offset(2),
                        Math.max(0, c1 - c0));
                out.add(TensorEvent.piece(s.name(), new long[] {s.colCount(), rows}, new long[] {c0 - s.colStart(), box.offset(1)},
                        view));
            }
        } catch (RuntimeException ex) {
            out.forEach(TensorEvent::release);
            ownerHandle.release();
            throw ex;
        }
        ownerHandle.release();
        return out;
    }
}
