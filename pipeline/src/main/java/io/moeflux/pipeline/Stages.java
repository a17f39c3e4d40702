package io.moeflux.pipeline;

import java.util.function.Function;
import java.util.function.Predicate;
import java.util.function.UnaryOperator;
import reactor.core.publisher.Flux;

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
     * Releases every event that Reactor discards upstream of this point: elements queued in operators
     * when the subscriber cancels or an error cuts the stream short, and elements filtered out by
     * operators that do not know about tensors.
     */
    public static Flux<TensorEvent> releaseOnDiscard(Flux<TensorEvent> events) {
        return events.doOnDiscard(TensorEvent.class, TensorEvent::release);
    }
}
