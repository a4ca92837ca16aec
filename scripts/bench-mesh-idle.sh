#!/usr/bin/env bash
# What an idle cluster costs (issue 13: the mesh's heartbeats): NODES single-core nodes on
# loopback, no client, sharing the scratch PostgreSQL; once they have met (25 s), the CPU
# time of all of them over SECS, as a share of the box's cores.
#   scripts/bench-mesh-idle.sh [NODES] [SECS]        # default 53 20
#   MARTLET_BIN=path/to/martlet scripts/bench-mesh-idle.sh   # another build
#   PERF=1 ...                                        # and a profile of five of the nodes
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/bench-node-config.sh
nodes=${1:-53} secs=${2:-20}
c2s_port_base=29000 mesh_port_base=29500 metrics_port_base=29800 meet_secs=25
[ -n "${MARTLET_BIN:-}" ] || cargo build --release --quiet -p martlet
bin=${MARTLET_BIN:-target/release/martlet}
server_url=$(scripts/postgres-scratch.sh start)
psql "$server_url" -qAt -c "DROP DATABASE IF EXISTS martlet_bench_mesh_idle WITH (FORCE)" -c "CREATE DATABASE martlet_bench_mesh_idle"
work=$(mktemp -d /tmp/bench-mesh-idle.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; sleep 2; kill -9 "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT
for i in $(seq 0 $((nodes - 1))); do
  seed=0; [ "$i" != 0 ] || seed=1
  mkdir -p "$work/n$i"
  bench_node_config "$work/n$i/martlet.toml" 1 "$((c2s_port_base + i))" "$((metrics_port_base + i))" "$work/n$i/data" \
    "${server_url%/*}/martlet_bench_mesh_idle"
  cat >>"$work/n$i/martlet.toml" <<TOML
[archive]
enabled = false
[cluster]
listen = "127.0.0.1:$((mesh_port_base + i))"
node_name = "n$i"
seeds = ["127.0.0.1:$((mesh_port_base + seed))"]
secret = "bench-cluster-secret-0123456789"
TOML
  "$bin" serve --config "$work/n$i/martlet.toml" >"$work/n$i/log" 2>&1 &
  pids+=($!)
  [ "$i" != 0 ] || sleep 3 # the first applies the schema's migrations
done
sleep "$meet_secs"
for i in "${!pids[@]}"; do kill -0 "${pids[$i]}" 2>/dev/null || { echo "n$i died: $(tail -3 "$work/n$i/log")" >&2; exit 1; }; done
cpu_ticks() { for p in "${pids[@]}"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s}'; }
before=$(cpu_ticks); sleep "$secs"; after=$(cpu_ticks)
awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v s="$secs" -v n="$nodes" -v c="$(nproc)" \
  'BEGIN {printf "%d idle nodes: %.2f CPU s over %d s = %.1f %% of the box (%d cores)\n", n, t / hz, s, 100 * t / hz / s / c, c}'
if [ -n "${PERF:-}" ]; then
  perf record -q -e cpu-clock -g -o "$work/perf.data" -p "$(IFS=,; echo "${pids[*]:0:5}")" -- sleep 10 >/dev/null 2>&1
  perf report -i "$work/perf.data" --no-children --sort sym --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -30
fi
