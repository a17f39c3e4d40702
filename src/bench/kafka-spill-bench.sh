#!/usr/bin/env bash
# Kafka -> folder from-hf: how many bytes the consumer holds in spill files at peak. A network source
# reassembles each large tensor into an unlinked, memory-mapped file (page cache, not process memory);
# what the conversion still holds is what those files add up to. The input is the hy3-bench checkpoint
# (real Hy3 expert shapes, 4096 x 1536): one MoE layer of BENCH_EXPERTS experts, published once to a
# local broker; the conversion then runs BENCH_RUNS times, and the peak of the summed sizes of the spill
# files mapped into the converter is sampled every 20 ms.
#
#   src/bench/kafka-spill-bench.sh                              # 64 experts, 2.4 GB of experts in one layer
#   BENCH_BASELINE=/tmp/old src/bench/kafka-spill-bench.sh      # the same, alternating with another build
#
# Settings (environment): BENCH_DIR (work folder, default ./bench-work; needs 3x the input free),
# BENCH_EXPERTS (default 64), BENCH_RUNS (default 3), BENCH_BASELINE (a checkout of another commit,
# `git worktree add /tmp/old COMMIT`; its own launcher builds it), BENCH_KEEP=1 keeps the work folder.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=${BENCH_DIR:-$root/bench-work}/kafka-spill
experts=${BENCH_EXPERTS:-64}
runs=${BENCH_RUNS:-3}
moeflux="$root/moeflux"
baseline=${BENCH_BASELINE:+$BENCH_BASELINE/moeflux}

source "$root/src/bench/timing.sh"

broker_pid=""
cleanup() {
  if [ -n "$broker_pid" ]; then
    kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  if [ "${BENCH_KEEP-}" != 1 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
rm -rf "$work"
mkdir -p "$work"

# Samples process $1's mappings every 20 ms while it runs; prints the peak, in bytes, of the mapped
# spill files (each mapped whole, once).
peak_spill_bytes() {
  local pid=$1 peak=0 now range rest
  while [ -r "/proc/$pid/maps" ]; do
    now=0
    while read -r range rest; do
      now=$((now + 16#${range#*-} - 16#${range%-*}))
    done < <(grep -F .moeflux-spill- "/proc/$pid/maps" 2>/dev/null || true)
    [ "$now" -gt "$peak" ] && peak=$now
    sleep 0.02
  done
  echo "$peak"
}

echo "building..." >&2
"$moeflux" --version >&2
if [ -n "$baseline" ]; then "$baseline" --version >&2; fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$moeflux" broker --port "$port" --data-dir "$work/broker" > "$work/broker.log" 2>&1 &
broker_pid=$!
for _ in $(seq 1 300); do
  grep -q "listening\|ready" "$work/broker.log" 2>/dev/null && break
  kill -0 "$broker_pid" 2>/dev/null || { cat "$work/broker.log" >&2; exit 1; }
  sleep 0.1
done

echo "generating hy3-bench with $experts experts in its MoE layer and publishing it ..." >&2
"$moeflux" generate "$work/in" --preset hy3-bench --experts "$experts" --force >&2
topic="kafka://127.0.0.1:$port/bench?checkpoint=spill"
"$moeflux" copy "$work/in" "$topic" >&2
layer_bytes=$(du -cb "$work"/in/*.safetensors | tail -1 | cut -f1)

# convert LAUNCHER: from-hf from the topic into a folder; prints the peak spill bytes.
convert() {
  rm -rf "$work/out"
  "$1" from-hf "$topic" "$work/out" --no-sync > /dev/null &
  local pid=$!
  local peak
  peak=$(peak_spill_bytes "$pid")
  wait "$pid"
  rm -rf "$work/out"
  echo "$peak"
}

for i in $(seq 1 "$runs"); do
  new=$(convert "$moeflux")
  line="run $i: peak spilled $(awk -v b="$new" 'BEGIN { printf "%.2f GB", b / 1e9 }')"
  if [ -n "$baseline" ]; then
    old=$(convert "$baseline")
    line="$line; baseline $(awk -v b="$old" 'BEGIN { printf "%.2f GB", b / 1e9 }')"
  fi
  echo "$line (input $(awk -v b="$layer_bytes" 'BEGIN { printf "%.2f GB", b / 1e9 }'), $experts experts of 4096 x 1536)"
done
