package io.moeflux.connect.kafka;

import java.io.IOException;
import java.net.ConnectException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.net.URLDecoder;
import java.net.URLEncoder;
import java.net.UnknownHostException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.regex.Pattern;

/**
 * A checkpoint location on Kafka: {@code kafka://HOST:PORT[,HOST:PORT]/TOPIC[?checkpoint=ID[&part=R&parts=N]]}.
 *
 * @param bootstrapServers the brokers, as {@code bootstrap.servers} wants them ({@code h1:p1,h2:p2})
 * @param topic            the topic that carries checkpoints
 * @param checkpoint       the checkpoint id; when absent a source reads the newest complete checkpoint
 *                         and a sink must be given one by other means
 * @param part             for a publisher of one part of a checkpoint published by many (one per rank): which
 *                         part it is, of how many
 */
public record KafkaEndpoint(String bootstrapServers, String topic, Optional<String> checkpoint, Optional<PartOf> part) {
    /** Part {@code part} (from 0) of a checkpoint published in {@code parts} parts. */
    public record PartOf(int part, int parts) {
        public PartOf {
            if (parts < 1 || part < 0 || part >= parts) {
                throw new IllegalArgumentException("part " + part + " of " + parts + ": part must be in 0.." + (parts - 1)
                        + " and parts at least 1");
            }
        }
    }

    public KafkaEndpoint(String bootstrapServers, String topic, Optional<String> checkpoint) {
        this(bootstrapServers, topic, checkpoint, Optional.empty());
    }

    public static final String SCHEME = "kafka://";
    private static final Pattern HOST_PORT = Pattern.compile("[A-Za-z0-9.\\-_]+:\\d{1,5}|\\[[0-9A-Fa-f:.]+]:\\d{1,5}");
    private static final Pattern TOPIC = Pattern.compile("[A-Za-z0-9._\\-]{1,249}");

    public KafkaEndpoint {
        if (!TOPIC.matcher(topic).matches() || topic.equals(".") || topic.equals("..")) {
            throw new IllegalArgumentException("invalid Kafka topic name '" + topic
                    + "': use 1 to 249 letters, digits, '.', '_' or '-'");
        }
        checkpoint.ifPresent(WireFormat::checkCheckpointId);
        if (part.isPresent() && checkpoint.isEmpty()) {
            throw new IllegalArgumentException("a part names its checkpoint: give checkpoint=ID with part and parts");
        }
    }

    /** True for strings that name a Kafka endpoint rather than a path. */
    public static boolean isKafka(String location) {
        return location.startsWith(SCHEME);
    }

    /** Parses {@code kafka://h:p[,h:p]/topic[?checkpoint=id]}; the error says what is wrong and how it should look. */
    public static KafkaEndpoint parse(String uri) {
        if (!isKafka(uri)) {
            throw invalid(uri, "it does not start with " + SCHEME);
        }
        String rest = uri.substring(SCHEME.length());
        String query = null;
        int q = rest.indexOf('?');
        if (q >= 0) {
            query = rest.substring(q + 1);
            rest = rest.substring(0, q);
        }
        int slash = rest.indexOf('/');
        if (slash < 0 || slash == rest.length() - 1) {
            throw invalid(uri, "it names no topic");
        }
        String servers = rest.substring(0, slash);
        String topic = rest.substring(slash + 1);
        List<String> hosts = new ArrayList<>();
        for (String hp : servers.split(",", -1)) {
            if (!HOST_PORT.matcher(hp).matches()) {
                throw invalid(uri, "'" + hp + "' is not HOST:PORT");
            }
            int port = Integer.parseInt(hp.substring(hp.lastIndexOf(':') + 1));
            if (port < 1 || port > 65535) {
                throw invalid(uri, "port " + port + " of '" + hp + "' is not in [1, 65535]");
            }
            hosts.add(hp);
        }
        Map<String, String> params = new HashMap<>();
        if (query != null && !query.isEmpty()) {
            for (String param : query.split("&")) {
                int eq = param.indexOf('=');
                String name = eq < 0 ? param : param.substring(0, eq);
                String value = eq < 0 ? "" : URLDecoder.decode(param.substring(eq + 1), StandardCharsets.UTF_8);
                if (!List.of("checkpoint", "part", "parts").contains(name)) {
                    throw invalid(uri, "unknown parameter '" + name + "' (known: checkpoint, part, parts)");
                }
                if (value.isEmpty()) {
                    throw invalid(uri, name + " is empty");
                }
                if (params.put(name, value) != null) {
                    throw invalid(uri, name + " is given twice");
                }
            }
        }
        Optional<PartOf> part = Optional.empty();
        if (params.containsKey("part") != params.containsKey("parts")) {
            throw invalid(uri, "part and parts go together");
        }
        if (params.containsKey("part")) {
            try {
                part = Optional.of(new PartOf(Integer.parseInt(params.get("part")), Integer.parseInt(params.get("parts"))));
            } catch (NumberFormatException e) {
                throw invalid(uri, "part and parts must be whole numbers");
            } catch (IllegalArgumentException e) {
                throw invalid(uri, e.getMessage());
            }
        }
        try {
            return new KafkaEndpoint(String.join(",", hosts), topic, Optional.ofNullable(params.get("checkpoint")), part);
        } catch (IllegalArgumentException e) {
            throw invalid(uri, e.getMessage());
        }
    }

    private static InvalidEndpointException invalid(String uri, String why) {
        return new InvalidEndpointException("invalid Kafka endpoint '" + uri + "': " + why
                + "; expected kafka://HOST:PORT[,HOST:PORT]/TOPIC[?checkpoint=ID[&part=R&parts=N]]");
    }

    /**
     * Fails within {@code timeout} per server, naming the address and the cause (unknown host,
     * connection refused, no answer), when none of the bootstrap servers accepts a TCP connection. The
     * Kafka clients would retry such a broker for a minute or more, logging as they go.
     */
    public void requireReachable(Duration timeout) throws IOException {
        List<String> failures = new ArrayList<>();
        for (String server : bootstrapServers.split(",")) {
            int colon = server.lastIndexOf(':');
            String host = server.substring(0, colon).replace("[", "").replace("]", "");
            int port = Integer.parseInt(server.substring(colon + 1));
            try (Socket s = new Socket()) {
                s.connect(new InetSocketAddress(InetAddress.getByName(host), port), Math.toIntExact(timeout.toMillis()));
                return;
            } catch (UnknownHostException e) {
                failures.add(server + ": unknown host");
            } catch (ConnectException e) {
                failures.add(server + ": connection refused");
            } catch (SocketTimeoutException e) {
                failures.add(server + ": no answer within " + timeout.toSeconds() + " s");
            } catch (IOException e) {
                failures.add(server + ": " + e.getMessage());
            }
        }
        throw new IOException("cannot reach the Kafka broker at " + String.join("; ", failures));
    }

    @Override
    public String toString() {
        return SCHEME + bootstrapServers + "/" + topic
                + checkpoint.map(c -> "?checkpoint=" + URLEncoder.encode(c, StandardCharsets.UTF_8)).orElse("")
                + part.map(p -> "&part=" + p.part() + "&parts=" + p.parts()).orElse("");
    }
}
