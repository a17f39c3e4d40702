package io.moeflux.pipeline;

import io.moeflux.tensor.SpillArea;
import java.util.Optional;
import java.util.function.Function;
import java.util.function.Predicate;
import java.util.function.UnaryOperator;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/** Composable {@code Flux<TensorEvent> -> Flux<TensorEvent>} stages that keep tensor ownership straight. */
public final class Stages {
    private Stages() {}

    /** Keeps events whose name passes {@code keep}; releases the others. */
    public static Function<Flux<TensorEvent>, Flux<TensorEvent>> filter(Predicate<String> keep) {
        return events -> releaseOnDiscard(events.handle((event, sink) -> {
            boolean pass;
            try {
                pass = keep.test(event.fqn());
            } catch (RuntimeException e) {
                event.release();
                sink.error(e);
                return;
            }
            if (pass) {
                sink.next(event);
            } else {
                event.release();
            }
        }));
    }

    /** Renames every event with {@code rename}; the tensor is handed on untouched. */
    public static Function<Flux<TensorEvent>, Flux<TensorEvent>> rename(UnaryOperator<String> rename) {
        return events -> releaseOnDiscard(events.handle((event, sink) -> {
            String name;
            try {
                name = rename.apply(event.fqn());
            } catch (RuntimeException e) {
                event.release();
                sink.error(e);
                return;
            }
            sink.next(event.withFqn(name));
        }));
    }

    /**
     * Makes whole tensors of pieces, for a consumer that takes whole tensors only (a Kafka checkpoint published
     * whole, a conversion that merges whole experts): each piece is copied into its place in a buffer of its
     * whole tensor, allocated from {@code spill} (a file mapping past its threshold, so a large tensor waits in
     * page cache), which goes on once the pieces cover it; whole tensors pass through. A piece that overlaps an
     * earlier one fails the stream, and so does the end of the stream while a tensor is not covered, naming a
     * region that never arrived. The buffers of tensors not yet whole are released however the stream ends.
     */
    public static Function<Flux<TensorEvent>, Flux<TensorEvent>> gatherPieces(SpillArea spill) {
        return events -> Flux.defer(() -> {
            PieceAccumulator accumulator = new PieceAccumulator(spill);
            Flux<TensorEvent> gathered = events.handle((event, sink) -> {
                if (event.isWhole()) {
                    sink.next(event);
                    return;
                }
                Optional<TensorEvent> whole;
                try {
                    whole = accumulator.add(event);
                } catch (RuntimeException e) {
                    sink.error(e);
                    return;
                }
                whole.ifPresent(sink::next);
            });
            return releaseOnDiscard(gathered.concatWith(Mono.fromRunnable(accumulator::requireNoneLeft))
                    .doFinally(signal -> accumulator.releaseAll()));
        });
    }

    /**
     * Releases every event that Reactor discards upstream of this point: elements queued in operators
     * when the subscriber cancels or an error cuts the stream short, and elements filtered out by
     * operators that do not know about tensors.
     */
    public static Flux<TensorEvent> releaseOnDiscard(Flux<TensorEvent> events) {
        return events.doOnDiscard(TensorEvent.class, TensorEvent::release);
    }
}
