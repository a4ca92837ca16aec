#!/usr/bin/env bash
# Flamegraph of a running martlet while a load runs.
#   scripts/flamegraph.sh PID OUT.svg -- LOAD COMMAND...
# With FOLDED=FILE set, the folded stacks are kept there too (for shares by function).
# Samples PID with `perf record -e cpu-clock` (software clock: works where hardware counters
# do not, e.g. in VMs) at 999 Hz with call graphs from DWARF-less frame pointers or debug
# info, for as long as the load command runs, then folds the stacks and draws the SVG with
# inferno. Installs linux-perf (Debian) and inferno (crates.io) when missing.
set -euo pipefail
[ $# -ge 4 ] && [ "$3" = "--" ] || { echo "usage: $0 PID OUT.svg -- LOAD COMMAND..." >&2; exit 2; }
pid=$1 out=$2; shift 3
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
command -v inferno-flamegraph >/dev/null || cargo install --quiet inferno
data=$(mktemp -d)
perf record -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$pid" -o "$data/perf.data" 2>"$data/record.log" &
rec=$!
sleep 0.5
"$@" || echo "load command exited with $?" >&2
kill -INT "$rec"; wait "$rec" || true
perf script -i "$data/perf.data" 2>/dev/null | inferno-collapse-perf > "$data/folded"
inferno-flamegraph --title "martlet: $*" < "$data/folded" > "$out"
[ -n "${FOLDED:-}" ] && cp "$data/folded" "$FOLDED"
echo "wrote $out ($(wc -l < "$data/folded") distinct stacks)"
rm -rf "$data"
