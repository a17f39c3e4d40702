package io.moeflux.pipeline;

import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * One checkpoint written in parts, each its own stream of tensor pieces written into place as it comes
 * (the ranks of a training job sending their pieces at once), committed once, when every part is in.
 * A part that fails takes back what it wrote, so the checkpoint can go on without it and the part can be
 * written again. Opened by {@link CheckpointSink#writeInParts}.
 *
 * <p>Parts may run at once, from any threads; {@link #commit()} and {@link #abort()} come after, or
 * instead of, the last part.
 */
public interface PartedWrite {
    /**
     * Writes one part's events into place; completes once they are all on file. When the events fail,
     * the sink refuses one (a region that another part covers, say), or the part is cancelled, the part
     * is forgotten: its writes stop, and once the last of them has, what it covered counts as never
     * written, so the same part may be written again (its bytes overwrite). Only then does the returned
     * {@code Mono} signal the error (a cancelled part is forgotten just the same, with nobody told).
     * Every event is released once written or forgotten.
     */
    Mono<Void> part(Flux<TensorEvent> events);

    /**
     * Commits the checkpoint once every planned tensor is covered exactly once by the parts that
     * completed, making all of it visible at once; otherwise fails, naming what never arrived, and
     * nothing is left. Call it once no part runs.
     */
    Mono<CommitSummary> commit();

    /** Ends the write without committing: parts still writing stop, and nothing of the checkpoint is left. */
    Mono<Void> abort();
}
