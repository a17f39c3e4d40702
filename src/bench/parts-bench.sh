#!/usr/bin/env bash
# Multi-part upload benchmark: the 4-rank sharded save of consolidate-bench.sh (hy3-bench at real Hy3 expert
# shapes, 1 GiB embedding and lm_head, cut by dcp-cut.py) uploaded to `moeflux serve` as the four parts of
# one checkpoint, all four at once (one uploader process per rank, each sending its rank's file with
# sendfile(2)), timed from the first byte to the last part's answer (the commit), against `cp -r` of the
# save in the same round; and the service's peak anonymous memory over all rounds. The parts arrive at
# socket speed while the sink writes at disk speed, so this is the "slow sink, fast parts" case: what the
# service holds meanwhile must stay bounded.
#
#   src/bench/parts-bench.sh                      # no manifest: parts wait in the spool until the last one
#   BENCH_MANIFEST=1 src/bench/parts-bench.sh     # manifest first: each part streams straight into place
#
# Settings (environment): BENCH_DIR (work folder, default ./bench-work; needs 4x the input free),
# BENCH_EXPERTS (default 32), BENCH_RUNS (default 5), BENCH_MANIFEST (0 or 1), BENCH_DIRECTION (none or
# from-hf, default none), BENCH_KEEP=1 keeps the work folder. Neither cp nor the service (--no-sync) fsyncs.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=${BENCH_DIR:-$root/bench-work}/parts
experts=${BENCH_EXPERTS:-32}
runs=${BENCH_RUNS:-5}
manifest=${BENCH_MANIFEST:-0}
direction=${BENCH_DIRECTION:-none}
moeflux="$root/moeflux"

source "$root/src/bench/timing.sh"

server_pid=""
cleanup() {
  rm -f "$work/sampling"
  [ -n "$server_pid" ] && { kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; }
  if [ "${BENCH_KEEP-}" != 1 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
rm -rf "$work"
mkdir -p "$work"

"$moeflux" --version >&2
echo "generating hy3-bench with $experts experts, cutting it into 4 ranks' files ..." >&2
"$moeflux" generate "$work/in" --preset hy3-bench --experts "$experts" --vocab 131072 --force >&2
python3 "$root/src/bench/dcp-cut.py" "$work/in" "$work/save" 4
ranks=("$work"/save/shard-*.safetensors)
save_bytes=$(du -sb "$work/save" | cut -f1)

# The manifest: every tensor of the unsharded checkpoint with its whole type and shape.
python3 - "$work/in" 4 > "$work/manifest.json" <<'PY'
import glob, json, struct, sys
tensors = {}
for path in sorted(glob.glob(sys.argv[1] + "/*.safetensors")):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        for name, v in json.loads(f.read(n)).items():
            if name != "__metadata__":
                tensors[name] = {"dtype": v["dtype"], "shape": v["shape"]}
print(json.dumps({"parts": int(sys.argv[2]), "tensors": tensors}))
PY

cat > "$work/upload.py" <<'PY'
import os, socket, sys, urllib.parse
url, name = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2]
s = socket.create_connection((url.hostname, url.port))
size = os.path.getsize(name)
s.sendall(f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Length: {size}\r\n\r\n".encode())
with open(name, "rb") as f:
    offset = 0
    while offset < size:
        offset += os.sendfile(s.fileno(), f.fileno(), offset, size - offset)
answer = b""
while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
    chunk = s.recv(65536)
    if not chunk:
        break
    answer += chunk
status = answer.split(b" ", 2)[1]
if status != b"200":
    sys.exit(answer.decode(errors="replace"))
PY

"$moeflux" serve --port 0 --sink "$work/sink" --direction "$direction" --config "$work/in/config.json" --no-sync \
  2> "$work/serve.log" &
server_pid=$!
url=""
for _ in $(seq 1 300); do
  url=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$work/serve.log")
  [ -n "$url" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$work/serve.log" >&2; exit 1; }
echo "server: $url, direction $direction, manifest $manifest" >&2

touch "$work/sampling"
peak_anon_kib "$server_pid" "$work/sampling" > "$work/peak" &
sampler=$!

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratios=""
# Round 0 warms the service's JIT and is not counted.
for i in $(seq 0 "$runs"); do
  sync
  start=$(now); cp -r "$work/save" "$work/cp"; end=$(now)
  cp_s=$(seconds "$start" "$end")
  rm -rf "$work/cp"
  id="round-$i"
  sync
  start=$(now)
  if [ "$manifest" = 1 ]; then
    curl -sf -X PUT --data-binary @"$work/manifest.json" "$url/v1/checkpoints/$id/manifest" > /dev/null
  fi
  pids=""
  for r in 0 1 2 3; do
    python3 "$work/upload.py" "$url/v1/checkpoints/$id/parts/$r?parts=4" "${ranks[$r]}" &
    pids="$pids $!"
  done
  for p in $pids; do wait "$p"; done
  end=$(now)
  parts_s=$(seconds "$start" "$end")
  rm -rf "$work/sink/$id"
  [ "$i" = 0 ] && { echo "warm-up: cp -r ${cp_s} s, four parts ${parts_s} s" >&2; continue; }
  ratios="$ratios $(awk -v a="$parts_s" -v b="$cp_s" 'BEGIN { printf "%.3f", a / b }')"
  echo "round $i: cp -r ${cp_s} s, four parts at once to commit ${parts_s} s" >&2
done
rm -f "$work/sampling"
wait "$sampler"
awk -v bytes="$save_bytes" -v runs="$runs" -v r="$(echo "$ratios" | median)" -v peak="$(cat "$work/peak")" \
    -v m="$manifest" 'BEGIN {
  printf "save: 4 ranks, %.2f GB; manifest first: %s\n", bytes / 1e9, m ? "yes" : "no"
  printf "four parts at once, first byte to commit / cp -r, median of %d rounds: %.2f\n", runs, r
  printf "peak anonymous memory of the service: %d MiB\n", peak / 1024
}'
