#!/usr/bin/env bash
# Why the folder sink writes in 256 KB system calls: times buffered writes of the same bytes in large
# and small calls, and `cp` of them, each after an idle pause.
#
#   src/bench/write-size-bench.sh          # 2.1 GB per write, 3 rounds, 8 s pauses
#
# On a VM whose balloon reports free memory back to the host (virtio-balloon free page reporting, on
# this project's machines), page cache that the kernel backs with large folios (large writes) has to
# be faulted in on the host again once it has been idle for a few seconds; small writes and
# copy_file_range (cp) get small folios and do not pay that. Seen here for 2 GiB: 8 MB writes 6.3-6.5 s,
# 256 KB writes 1.4-2.2 s, cp 1.7-2.2 s. On bare metal all three should be close.
#
# Settings (environment): BENCH_DIR (default ./bench-work), BENCH_MB (default 2048), BENCH_RUNS
# (default 3), BENCH_PAUSE (seconds idle before each measurement, default 8).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=${BENCH_DIR:-$root/bench-work}
mb=${BENCH_MB:-2048}
runs=${BENCH_RUNS:-3}
pause=${BENCH_PAUSE:-8}
mkdir -p "$work"
trap 'rm -f "$work/ws-src" "$work/ws-out"' EXIT

source "$root/src/bench/timing.sh"

# Times "$@" after the pause and a sync, then deletes the output while it is still dirty.
timed() {
  sleep "$pause"
  sync
  local start end
  start=$(now)
  "$@"
  end=$(now)
  rm -f "$work/ws-out"
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }'
}

head -c "$((mb << 20))" /dev/urandom > "$work/ws-src"
sync
for i in $(seq 1 "$runs"); do
  large=$(timed dd if="$work/ws-src" of="$work/ws-out" bs=8M status=none)
  small=$(timed dd if="$work/ws-src" of="$work/ws-out" bs=256K status=none)
  copy=$(timed cp "$work/ws-src" "$work/ws-out")
  echo "round $i: ${mb} MiB  write(8 MB) ${large} s  write(256 KB) ${small} s  cp ${copy} s"
done
