# Helpers the benchmarks source: wall-clock timing, a process's peak anonymous memory, and both for one command.

now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
min() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b < a) ? b : a }'; }

# Samples RssAnon of process $1 every 20 ms while it runs (and, given a file $2, while that file
# exists); prints the peak in KiB. Only shell builtins in the loop (besides sleep), so the sampler
# barely competes with the process it measures.
peak_anon_kib() {
  local pid=$1 flag=${2-} peak=0 key value rest
  while [ -r "/proc/$pid/status" ] && { [ -z "$flag" ] || [ -e "$flag" ]; }; do
    while read -r key value rest; do
      if [ "$key" = "RssAnon:" ]; then
        [ "$value" -gt "$peak" ] && peak=$value
        break
      fi
    done < "/proc/$pid/status" 2>/dev/null || true
    sleep 0.02
  done
  echo "$peak"
}

# Runs "$@" in the background, its output thrown away, after a `sync`; sets $elapsed (s) and $peak_kib.
measure() {
  local start end
  sync
  start=$(now)
  "$@" >/dev/null &
  local pid=$!
  peak_kib=$(peak_anon_kib "$pid")
  wait "$pid"
  end=$(now)
  elapsed=$(seconds "$start" "$end")
}
