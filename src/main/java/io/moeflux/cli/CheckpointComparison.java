package io.moeflux.cli;

import io.moeflux.pipeline.CheckpointSource;
import io.moeflux.pipeline.Stages;
import io.moeflux.pipeline.TensorEvent;
import io.moeflux.tensor.Shapes;
import io.moeflux.tensor.SpillArea;
import io.moeflux.tensor.Tensor;
import io.moeflux.tensor.Tensors;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Predicate;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Compares two checkpoints tensor by tensor: names, dtypes, shapes and bytes.
 *
 * <p>B's tensors are held as they arrive (for file checkpoints these are views of mapped shards, not
 * copies), then A is streamed and each of its tensors is written chunk by chunk against B's bytes, so no
 * tensor is ever copied onto the heap. Order does not matter: shards may be laid out differently.
 */
final class CheckpointComparison {
    private CheckpointComparison() {}

    enum Kind {
        ONLY_IN_A("only in A"),
        ONLY_IN_B("only in B"),
        DTYPE("dtype differs"),
        SHAPE("shape differs"),
        BYTES("bytes differ"),
        DUPLICATE("appears twice");

        final String label;

        Kind(String label) {
            this.label = label;
        }
    }

    record Difference(String tensor, Kind kind, String detail) {
        @Override
        public String toString() {
            return kind.label + ": " + tensor + (detail.isEmpty() ? "" : " (" + detail + ")");
        }
    }

    /**
     * @param tensorsA     tensors of A that were compared (after the key filter)
     * @param tensorsB     tensors of B that were compared
     * @param equalTensors tensors equal in name, dtype, shape and bytes
     * @param equalBytes   bytes of those tensors
     * @param differences  every difference, in the order found
     */
    record Report(long tensorsA, long tensorsB, long equalTensors, long equalBytes, List<Difference> differences) {
        boolean identical() {
            return differences.isEmpty();
        }
    }

    /** Compares every tensor of {@code a} and {@code b} whose name passes {@code include}. */
    static Mono<Report> compare(CheckpointSource a, CheckpointSource b, Predicate<String> include) {
        return Mono.defer(() -> {
            Comparing state = new Comparing(include);
            return b.tensors().transform(CheckpointComparison::whole).doOnNext(state::holdB)
                    .thenMany(a.tensors().transform(CheckpointComparison::whole))
                    .doOnNext(state::compareA)
                    .then(Mono.fromSupplier(state::finish))
                    .doFinally(signal -> state.releaseHeld());
        });
    }

    /**
     * Tensors are compared whole: those of a sharded save, which arrive in pieces, are gathered first, each in
     * a spill file of the temporary folder until its last piece is read.
     */
    private static Flux<TensorEvent> whole(Flux<TensorEvent> events) {
        return events.transform(Stages.gatherPieces(SpillArea.inTempDir()));
    }

    /** Per-subscription state: the held B tensors and what has been found so far. */
    private static final class Comparing {
        private final Predicate<String> include;
        private final Map<String, TensorEvent> heldB = new LinkedHashMap<>();
        private final List<Difference> differences = new ArrayList<>();
        private long tensorsA;
        private long tensorsB;
        private long equalTensors;
        private long equalBytes;

        Comparing(Predicate<String> include) {
            this.include = include;
        }

        void holdB(TensorEvent event) {
            if (!include.test(event.fqn())) {
                event.release();
                return;
            }
            tensorsB++;
            TensorEvent previous = heldB.put(event.fqn(), event);
            if (previous != null) {
                previous.release();
                differences.add(new Difference(event.fqn(), Kind.DUPLICATE, "in B"));
            }
        }

        void compareA(TensorEvent event) {
            TensorEvent other = null;
            try {
                if (!include.test(event.fqn())) {
                    return;
                }
                tensorsA++;
                other = heldB.remove(event.fqn());
                if (other == null) {
                    differences.add(new Difference(event.fqn(), Kind.ONLY_IN_A, ""));
                    return;
                }
                Tensor ta = event.tensor();
                Tensor tb = other.tensor();
                if (ta.dtype() != tb.dtype()) {
                    differences.add(new Difference(event.fqn(), Kind.DTYPE, "A " + ta.dtype() + ", B " + tb.dtype()));
                } else if (!Arrays.equals(ta.shape(), tb.shape())) {
                    differences.add(new Difference(event.fqn(), Kind.SHAPE,
                            "A " + Shapes.format(ta.shape()) + ", B " + Shapes.format(tb.shape())));
                } else {
                    long mismatch = firstMismatch(ta, tb);
                    if (mismatch >= 0) {
                        differences.add(new Difference(event.fqn(), Kind.BYTES, "first at byte " + mismatch));
                    } else {
                        equalTensors++;
                        equalBytes += ta.byteSize();
                    }
                }
            } finally {
                event.release();
                if (other != null) {
                    other.release();
                }
            }
        }

        /** The offset of the first differing byte, or -1 when the bytes are equal. */
        private static long firstMismatch(Tensor a, Tensor b) {
            try {
                return Tensors.withContiguous(b, bytesB -> {
                    long[] pos = {0};
                    long[] first = {-1};
                    a.writeTo(chunk -> {
                        long n = chunk.byteSize();
                        if (first[0] < 0) {
                            long m = MemorySegment.mismatch(chunk, 0, n, bytesB, pos[0], pos[0] + n);
                            if (m >= 0) {
                                first[0] = pos[0] + m;
                            }
                        }
                        pos[0] += n;
                    });
                    return first[0];
                });
            } catch (IOException e) {
                throw new UncheckedIOException(e);
            }
        }

        Report finish() {
            heldB.keySet().forEach(name -> differences.add(new Difference(name, Kind.ONLY_IN_B, "")));
            return new Report(tensorsA, tensorsB, equalTensors, equalBytes, List.copyOf(differences));
        }

        void releaseHeld() {
            heldB.values().forEach(TensorEvent::release);
            heldB.clear();
        }
    }
}
