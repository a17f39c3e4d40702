package io.moeflux.serve;

import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.Timer;
import io.micrometer.prometheusmetrics.PrometheusConfig;
import io.micrometer.prometheusmetrics.PrometheusMeterRegistry;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicInteger;

/** The service's Prometheus metrics: bytes and tensors in and out, uploads in flight, upload durations. */
final class IngestMetrics {
    private final PrometheusMeterRegistry registry = new PrometheusMeterRegistry(PrometheusConfig.DEFAULT);
    private final AtomicInteger activeUploads = new AtomicInteger();
    final Counter bytesReceived = Counter.builder("moeflux.ingest.received.bytes")
            .description("Upload body bytes read from clients").baseUnit("bytes").register(registry);
    final Counter tensorsReceived = Counter.builder("moeflux.ingest.received.tensors")
            .description("Tensors decoded from upload bodies").register(registry);
    final Counter bytesWritten = Counter.builder("moeflux.ingest.written.bytes")
            .description("Converted tensor bytes written by the sink").baseUnit("bytes").register(registry);
    final Counter tensorsWritten = Counter.builder("moeflux.ingest.written.tensors")
            .description("Converted tensors written by the sink").register(registry);

    IngestMetrics() {
        Gauge.builder("moeflux.ingest.active.uploads", activeUploads, AtomicInteger::get)
                .description("Uploads being received and converted").register(registry);
    }

    void uploadStarted() {
        activeUploads.incrementAndGet();
    }

    /** Records an upload's whole duration, receive, conversion and commit, under its outcome. */
    void uploadEnded(String outcome, Duration took) {
        activeUploads.decrementAndGet();
        Timer.builder("moeflux.ingest.conversion")
                .description("Time from the start of an upload to its commit or failure")
                .tag("outcome", outcome)
                .register(registry)
                .record(took);
    }

    String scrape() {
        return registry.scrape();
    }
}
