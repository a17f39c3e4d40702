package io.moeflux.hy3;

import io.moeflux.hy3.Hy3Keys.Projection;
import io.moeflux.pipeline.TensorEvent;
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
 * {@code shape[1] == inter}, as the mixin checks) gives {@code down_proj = w[e]^T}. The splits are lazy
 * views that share the grouped tensor; it is freed when the last of them is released.
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
        Tensor tensor = event.tensor();
        long[] shape = tensor.shape();
        boolean gateUp = Hy3Keys.isGroupedGateUp(fqn);
        boolean down = !gateUp && Hy3Keys.isGroupedDown(fqn) && shape.length == 3 && shape[1] == inter;
        if (!gateUp && !down) {
            return List.of(event);
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
        // The grouped tensor is freed when its owner's handle and every split's handle are released.
        RefCounted shared = RefCounted.onLastRelease(tensor::release);
        Releasable ownerHandle = shared.retain();
        List<TensorEvent> out = new ArrayList<>(gateUp ? 2 * numExperts : numExperts);
        try {
            for (int e = 0; e < numExperts; e++) {
                if (gateUp) {
                    out.add(new TensorEvent(Hy3Keys.splitExpertKey(layer, e, Projection.GATE),
                            new TransposedSliceTensor(tensor, shared.retain(), e, 0, inter)));
                    out.add(new TensorEvent(Hy3Keys.splitExpertKey(layer, e, Projection.UP),
                            new TransposedSliceTensor(tensor, shared.retain(), e, inter, inter)));
                } else {
                    out.add(new TensorEvent(Hy3Keys.splitExpertKey(layer, e, Projection.DOWN),
                            new TransposedSliceTensor(tensor, shared.retain(), e, 0, shape[2])));
                }
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
