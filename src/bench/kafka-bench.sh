#!/usr/bin/env bash
# Kafka publish benchmark: publishes a >= 1 GB checkpoint (64 tensors of 16 MiB) to a local single-node
# broker with the moeflux Kafka sink, and the same number of bytes with Kafka's own ProducerPerformance
# at the same record size and producer settings (idempotent, acks=all, 1 MiB records), alternately, in
# one run, on one broker; prints both throughputs and their ratio. Target: ratio >= 0.7.
#
#   src/bench/kafka-bench.sh
#   BENCH_TENSORS=128 BENCH_ROUNDS=3 src/bench/kafka-bench.sh    # 2 GB per run, best of 3
#
# Settings (environment): BENCH_TENSORS (16 MiB tensors per run, default 64), BENCH_ROUNDS (default 2),
# BENCH_DIR (where the broker keeps its logs, default the temporary folder; needs 2x the run size free).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
./mvnw -q -pl connectors -am test -Dtest=KafkaPublishBench -Dsurefire.failIfNoSpecifiedTests=false \
  -Dkafka.bench.tensors="${BENCH_TENSORS:-64}" -Dkafka.bench.rounds="${BENCH_ROUNDS:-2}" \
  -Dkafka.bench.dir="${BENCH_DIR:-${TMPDIR:-/tmp}}" 2>&1 | grep '^kafka-bench:'
