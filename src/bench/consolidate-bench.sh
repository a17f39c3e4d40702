#!/usr/bin/env bash
# Consolidation benchmark: a >= 2.5 GB checkpoint at real Hy3 expert shapes (hy3-bench, one MoE layer of
# BENCH_EXPERTS experts of 4096 x 1536, and a 131072-token vocabulary: the embedding and lm_head are 1 GiB
# each) cut into the files of a 4-rank sharded save (src/bench/dcp-cut.py: FSDP row pieces, experts by
# expert-parallel range, the layout PyTorch DCP's Hugging Face storage writer makes), then, in turn in every round: `cp -r` of the save, `moeflux copy`
# of it (consolidation), `moeflux from-hf` of it and `moeflux from-hf` of the unsharded checkpoint; the
# median of the per-round ratios and the peak anonymous memory of each moeflux run.
#
#   src/bench/consolidate-bench.sh
#
# Settings (environment): BENCH_DIR (work folder, default ./bench-work; needs 4x the input free),
# BENCH_EXPERTS (default 32), BENCH_RANKS (default 4), BENCH_RUNS (default 5), BENCH_KEEP=1 keeps the work
# folder. Targets: consolidation <= 1.5x cp, from-hf of the save within 10% of from-hf of the checkpoint,
# peak anonymous memory <= 256 MiB. Outputs are written with --no-sync and deleted before they are flushed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
work=${BENCH_DIR:-$root/bench-work}/consolidate
experts=${BENCH_EXPERTS:-32}
ranks=${BENCH_RANKS:-4}
runs=${BENCH_RUNS:-5}
moeflux="$root/moeflux"

source "$root/src/bench/timing.sh"

rm -rf "$work"
mkdir -p "$work"
[ "${BENCH_KEEP-}" = 1 ] || trap 'rm -rf "$work"' EXIT

echo "building..." >&2
"$moeflux" --version >&2
echo "generating hy3-bench with $experts experts, cutting it into $ranks ranks' files ..." >&2
"$moeflux" generate "$work/in" --preset hy3-bench --experts "$experts" --vocab 131072 --force >&2
python3 "$root/src/bench/dcp-cut.py" "$work/in" "$work/save" "$ranks"
save_bytes=$(du -sb "$work/save" | cut -f1)

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
copy_ratios=""
fromhf_ratios=""
peak=0
for i in $(seq 1 "$runs"); do
  measure cp -r "$work/save" "$work/cp"
  rm -rf "$work/cp"
  cp_s=$elapsed
  measure "$moeflux" copy "$work/save" "$work/out" --no-sync
  rm -rf "$work/out"
  copy_s=$elapsed
  [ "$peak_kib" -gt "$peak" ] && peak=$peak_kib
  measure "$moeflux" from-hf "$work/save" "$work/out" --no-sync
  rm -rf "$work/out"
  sharded_s=$elapsed
  [ "$peak_kib" -gt "$peak" ] && peak=$peak_kib
  measure "$moeflux" from-hf "$work/in" "$work/out" --no-sync
  rm -rf "$work/out"
  whole_s=$elapsed
  copy_ratios="$copy_ratios $(awk -v a="$copy_s" -v b="$cp_s" 'BEGIN { printf "%.3f", a / b }')"
  fromhf_ratios="$fromhf_ratios $(awk -v a="$sharded_s" -v b="$whole_s" 'BEGIN { printf "%.3f", a / b }')"
  echo "run $i: cp -r ${cp_s} s, copy (consolidation) ${copy_s} s, from-hf of the save ${sharded_s} s, of the checkpoint ${whole_s} s" >&2
done
awk -v bytes="$save_bytes" -v ranks="$ranks" -v runs="$runs" -v c="$(echo "$copy_ratios" | median)" \
    -v f="$(echo "$fromhf_ratios" | median)" -v peak="$peak" 'BEGIN {
  printf "save: %d ranks, %.2f GB\n", ranks, bytes / 1e9
  printf "copy (consolidation) / cp -r, median of %d rounds: %.2f  (target <= 1.5)\n", runs, c
  printf "from-hf of the save / from-hf of the checkpoint, median of %d rounds: %.2f  (target <= 1.10)\n", runs, f
  printf "peak anonymous memory of copy and from-hf: %d MiB  (target <= 256 MiB)\n", peak / 1024
}'
