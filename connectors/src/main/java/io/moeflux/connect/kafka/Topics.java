package io.moeflux.connect.kafka;

import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Schedulers;

/** Topic metadata through the admin client, off Reactor's non-blocking threads. */
final class Topics {
    private static final long TIMEOUT_SECONDS = 60;

    private Topics() {}

    /** The topic's partition count, or empty when it does not exist. */
    static Mono<Optional<Integer>> partitions(String bootstrapServers, String topic) {
        return Mono.fromCallable(() -> {
            try (Admin admin = admin(bootstrapServers)) {
                return describe(admin, topic);
            }
        }).subscribeOn(Schedulers.boundedElastic());
    }

    /** The topic's partition count, creating it with {@code partitions} partitions when missing. */
    static Mono<Integer> ensure(String bootstrapServers, String topic, int partitions) {
        return Mono.fromCallable(() -> {
            try (Admin admin = admin(bootstrapServers)) {
                Optional<Integer> existing = describe(admin, topic);
                if (existing.isPresent()) {
                    return existing.get();
                }
                try {
                    admin.createTopics(List.of(new NewTopic(topic, Optional.of(partitions), Optional.empty())))
                            .all().get(TIMEOUT_SECONDS, TimeUnit.SECONDS);
                } catch (ExecutionException e) {
                    if (!(e.getCause() instanceof TopicExistsException)) {
                        throw e;
                    }
                }
                // A new topic reaches the brokers' metadata a moment after its creation is acknowledged.
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_SECONDS);
                while (System.nanoTime() < deadline) {
                    Optional<Integer> created = describe(admin, topic);
                    if (created.isPresent()) {
                        return created.get();
                    }
                    Thread.sleep(50);
                }
                throw new IllegalStateException("topic " + topic + " was created but did not appear within "
                        + TIMEOUT_SECONDS + " s");
            }
        }).subscribeOn(Schedulers.boundedElastic());
    }

    private static Optional<Integer> describe(Admin admin, String topic)
            throws InterruptedException, ExecutionException, TimeoutException {
        try {
            var description = admin.describeTopics(List.of(topic)).allTopicNames().get(TIMEOUT_SECONDS, TimeUnit.SECONDS);
            return Optional.of(description.get(topic).partitions().size());
        } catch (ExecutionException e) {
            if (e.getCause() instanceof UnknownTopicOrPartitionException) {
                return Optional.empty();
            }
            throw e;
        }
    }

    private static Admin admin(String bootstrapServers) {
        return Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrapServers,
                AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, (int) TimeUnit.SECONDS.toMillis(TIMEOUT_SECONDS)));
    }
}
