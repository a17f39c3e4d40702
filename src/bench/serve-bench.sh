#!/usr/bin/env bash
# Ingest-service benchmark: a >= 1 GB checkpoint uploaded over loopback to `moeflux serve`, converted
# on the fly and committed, timed from the first byte sent to the JSON summary received, as a ratio to
# `cp` of the same bytes measured in the same run on the same disk, best of several runs; and the
# server's peak anonymous memory during the uploads. A third measurement, the same client sending the
# same bytes to a receiver that discards them, shows what the client and loopback alone cost.
#
#   src/bench/serve-bench.sh                          # from-hf, 2.76 GB (64 experts of 4096 x 1536)
#   BENCH_DIRECTION=to-hf src/bench/serve-bench.sh    # the same checkpoint in the native layout, split back
#   BENCH_DIRECTION=none src/bench/serve-bench.sh     # storage only, no conversion
#   BENCH_CLIENT=curl src/bench/serve-bench.sh        # uploads with `curl -T`, as the README shows
#
# The default client is a standard-library Python uploader that sends the file with sendfile(2) in
# 64 MiB chunks of a chunked body, as a trainer streaming a saved shard would: curl alone, into the
# discarding receiver, takes 2 to 4.5 times as long as `cp` on the 2-core development VM, which would
# measure curl rather than the service.
#
# The input is larger than the kernel lets a writer keep dirty without writeback (10% of RAM here), as
# in from-hf-bench.sh: below that, `cp` only measures a memory copy.
#
# Settings (environment): BENCH_DIR (work folder, default ./bench-work; needs 4x the input free),
# BENCH_EXPERTS (experts in the MoE layer, default 64), BENCH_DIRECTION (from-hf, to-hf or none, default
# from-hf; to-hf uploads the generated checkpoint converted to the native layout first, untimed),
# BENCH_CLIENT (python or curl, default python), BENCH_SINGLE_BLOB (1, the default, uploads a one-file
# checkpoint with single_blob=true; 0 without, so the sink spools), BENCH_RUNS (default 5),
# BENCH_WARMUP (untimed uploads first, default 1), BENCH_KEEP=1 keeps the work folder, BENCH_BASELINE (a
# checkout of another commit, say an earlier one: `git worktree add /tmp/old COMMIT`; its own launcher
# builds it) starts its service too, adds an upload to it to every round, and reports the median of this
# build's upload time over the baseline's, round by round, and both servers' peaks. Target: ratio <= 2.5.
#
# The service is long-running, so it is measured warm: the first upload into a fresh JVM also compiles
# the code on the way (1 to 1.5 s more on the development VM), and is not timed.
#
# Neither cp nor the service fsyncs, so both are timed to the page cache; `sync` runs, untimed, before
# each measurement so neither inherits the other's writeback. The input stays cached for both.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=${BENCH_DIR:-$root/bench-work}/serve
experts=${BENCH_EXPERTS:-64}
client=${BENCH_CLIENT:-python}
direction=${BENCH_DIRECTION:-from-hf}
runs=${BENCH_RUNS:-5}
warmups=${BENCH_WARMUP:-1}
moeflux="$root/moeflux"

source "$root/src/bench/timing.sh"

server_pid=""
base_pid=""
discard_pid=""
# Under set -e a failing command would end the trap early, so every step here tolerates failure.
cleanup() {
  for pid in $server_pid $base_pid $discard_pid; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ "${BENCH_KEEP-}" != 1 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
rm -rf "$work"
mkdir -p "$work"

echo "building..." >&2
(cd "$root" && ./mvnw -q -B -DskipTests -pl src -am package) >&2

echo "generating hy3-bench with $experts experts in its MoE layer into $work/in ..." >&2
"$moeflux" generate "$work/in" --preset hy3-bench --experts "$experts" --force >&2
if [ "$direction" = to-hf ]; then
  "$moeflux" from-hf "$work/in" "$work/native" >&2
  cp "$work/in/config.json" "$work/native/"
  rm -rf "$work/in"
  mv "$work/native" "$work/in"
fi
shards=("$work"/in/*.safetensors)
in_bytes=$(cat "${shards[@]}" | wc -c)

# start_server LAUNCHER NAME: starts `serve` into $work/NAME-sink; sets $started_pid and $started_url.
start_server() {
  "$1" serve --port 0 --sink "$work/$2-sink" --direction "$direction" --config "$work/in/config.json" \
    2> "$work/$2.log" &
  started_pid=$!
  started_url=""
  for _ in $(seq 1 300); do
    started_url=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$work/$2.log")
    [ -n "$started_url" ] && break
    kill -0 "$started_pid" 2>/dev/null || { cat "$work/$2.log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$started_url" ] || { echo "the server did not start:" >&2; cat "$work/$2.log" >&2; exit 1; }
}
start_server "$moeflux" serve
server_pid=$started_pid
url=$started_url
echo "server: $url, direction $direction" >&2
base_url=""
if [ -n "${BENCH_BASELINE-}" ]; then
  start_server "$BENCH_BASELINE/moeflux" baseline
  base_pid=$started_pid
  base_url=$started_url
  echo "baseline server ($BENCH_BASELINE): $base_url" >&2
fi

# The floor: an HTTP/1.1 receiver that reads the chunked body into one reused buffer and drops it.
python3 - "$work/discard.port" > /dev/null 2>&1 <<'PY' &
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
open(sys.argv[1], "w").write(str(s.getsockname()[1]))
buf, tail = bytearray(1 << 20), b""
while True:
    c, _ = s.accept()
    while True:
        n = c.recv_into(buf)
        tail = (tail + bytes(buf[max(0, n - 5):n]))[-5:]
        if not n or tail == b"0\r\n\r\n":
            break
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    c.close()
PY
discard_pid=$!
for _ in $(seq 1 100); do [ -s "$work/discard.port" ] && break; sleep 0.05; done
discard_url="http://127.0.0.1:$(cat "$work/discard.port")"

# The Python client: PUT with a chunked body, each file sent with sendfile(2), summary to stdout.
cat > "$work/upload.py" <<'PY'
import os, socket, sys, urllib.parse
url, files = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2:]
s = socket.create_connection((url.hostname, url.port))
target = url.path + ("?" + url.query if url.query else "")
s.sendall(f"PUT {target} HTTP/1.1\r\nHost: {url.netloc}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
for name in files:
    with open(name, "rb") as f:
        size, offset = os.fstat(f.fileno()).st_size, 0
        while offset < size:
            n = min(64 << 20, size - offset)
            s.sendall(b"%x\r\n" % n)
            end = offset + n
            while offset < end:
                offset += os.sendfile(s.fileno(), f.fileno(), offset, end - offset)
            s.sendall(b"\r\n")
s.sendall(b"0\r\n\r\n")
response = s.makefile("rb")
status = response.readline().decode()
length = 0
while (line := response.readline().strip()):
    name, _, value = line.decode().partition(":")
    if name.lower() == "content-length":
        length = int(value)
body = response.read(length).decode()
if " 200 " not in status:
    sys.exit("upload failed: " + status + body)
print(body)
PY

# upload BASE_URL ID: sends the checkpoint's shards back to back as one chunked body.
upload() {
  if [ "$client" = curl ]; then
    cat "${shards[@]}" | curl -sS --fail-with-body -T - -H 'Transfer-Encoding: chunked' "$1/v1/checkpoints/$2$single"
  else
    python3 "$work/upload.py" "$1/v1/checkpoints/$2$single" "${shards[@]}"
  fi
}

# A one-file checkpoint is one blob: single_blob=true lets its header plan the output (see README.md, "Live ingest (HTTP)").
single=""
[ "${BENCH_SINGLE_BLOB:-1}" = 1 ] && single="?single_blob=true"
for i in $(seq 1 "$warmups"); do
  upload "$url" "warmup$i" > /dev/null
  rm -rf "$work/serve-sink/warmup$i"
  if [ -n "$base_url" ]; then
    upload "$base_url" "warmup$i" > /dev/null
    rm -rf "$work/baseline-sink/warmup$i"
  fi
done
best_cp=""
best_floor=""
best_up=""
touch "$work/sampling"
peak_anon_kib "$server_pid" "$work/sampling" > "$work/sampling.peak" &
sampler=$!
base_sampler=""
if [ -n "$base_url" ]; then
  peak_anon_kib "$base_pid" "$work/sampling" > "$work/baseline-sampling.peak" &
  base_sampler=$!
fi
base_ratios=""
for i in $(seq 1 "$runs"); do
  rm -rf "$work/cp" "$work/serve-sink/run$((i - 1))" "$work/baseline-sink/run$((i - 1))"
  mkdir -p "$work/cp"
  sync
  start=$(now)
  cp "${shards[@]}" "$work/cp/"
  cp_s=$(seconds "$start" "$(now)")
  best_cp=$(min "$best_cp" "$cp_s")
  rm -rf "$work/cp"
  sync
  start=$(now)
  upload "$discard_url" "run$i" > /dev/null
  floor_s=$(seconds "$start" "$(now)")
  best_floor=$(min "$best_floor" "$floor_s")
  sync
  start=$(now)
  summary=$(upload "$url" "run$i")
  up_s=$(seconds "$start" "$(now)")
  best_up=$(min "$best_up" "$up_s")
  echo "run $i: cp ${cp_s} s, $client into a discarding receiver ${floor_s} s, upload ${up_s} s: $summary" >&2
  if [ -n "$base_url" ]; then
    sync
    start=$(now)
    upload "$base_url" "run$i" > /dev/null
    base_s=$(seconds "$start" "$(now)")
    base_ratios="$base_ratios $(awk -v a="$up_s" -v b="$base_s" 'BEGIN { printf "%.3f", a / b }')"
    echo "run $i: baseline upload ${base_s} s" >&2
  fi
done
rm "$work/sampling"
wait "$sampler"
peak_kib=$(cat "$work/sampling.peak")
if [ -n "$base_sampler" ]; then
  wait "$base_sampler"
  median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
  awk -v ratio="$(echo "$base_ratios" | median)" -v peak="$(cat "$work/baseline-sampling.peak")" -v runs="$runs" \
      -v base="$BENCH_BASELINE" 'BEGIN {
    printf "ratio upload / baseline upload (%s), median of %d rounds: %.2f; baseline server peak anonymous memory %d MiB\n", base, runs, ratio, peak / 1024
  }'
fi

awk -v bytes="$in_bytes" -v cp="$best_cp" -v floor="$best_floor" -v up="$best_up" -v peak="$peak_kib" \
    -v runs="$runs" -v experts="$experts" -v dir="$direction" -v single="${single:-no}" -v client="$client" 'BEGIN {
  printf "input: hy3-bench, %d experts of 4096 x 1536 in one layer, %.2f GB, uploaded with %s (chunked), query %s\n", experts, bytes / 1e9, client, single
  printf "cp                        best of %d: %7.3f s  (%.2f GB/s)\n", runs, cp, bytes / cp / 1e9
  printf "%-6s into a discarder   best of %d: %7.3f s  (%.2f GB/s)\n", client, runs, floor, bytes / floor / 1e9
  printf "upload %-18s best of %d: %7.3f s  (%.2f GB/s)\n", dir, runs, up, bytes / up / 1e9
  printf "ratio upload / cp: %.2f  (target <= 2.5); client alone / cp: %.2f; upload / client alone: %.2f\n", up / cp, floor / cp, up / floor
  printf "peak anonymous memory of the server: %d MiB\n", peak / 1024
}'
