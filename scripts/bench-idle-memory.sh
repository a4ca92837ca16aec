#!/usr/bin/env bash
# What an idle session costs in memory, on one node (issue 13: memory per idle session):
#   scripts/bench-idle-memory.sh [SESSIONS] [none|starttls|direct]   # default: 15000 none
#   MARTLET_BIN=path/to/martlet scripts/bench-idle-memory.sh          # another build
#   LOGINS_IN_FLIGHT=2 scripts/bench-idle-memory.sh                  # logins in flight per process
# A fresh martlet (`cores = 1`, pinned to CPU 0; embedded storage, SASL PLAIN, defaults
# otherwise) takes SESSIONS logins from `loadgen connections` (two processes, 500 logins
# in flight each unless LOGINS_IN_FLIGHT says otherwise, pinned to CPU 1), which holds them idle for 20 s. Prints the server's RSS
# before and with every session held, and the delta per session (loadgen `--server-pid`),
# then the two futures an idle session is made of (`martlet_session_task_bytes`,
# `martlet_user_task_bytes`) and the kernel's slab growth for the connections (both ends).
# One process may hold 20,000 files here: SESSIONS up to about 18,000.
set -euo pipefail
cd "$(dirname "$0")/.."
sessions=${1:-15000} tls=${2:-none}
port=${BENCH_PORT:-26230}   # below the ephemeral range; +1 Direct TLS, +2 metrics
[ -n "${MARTLET_BIN:-}" ] || cargo build --release --quiet -p martlet -p loadgen
export MARTLET_BIN=${MARTLET_BIN:-target/release/martlet} BENCH_CORES=1 BENCH_PIN=0 BENCH_METRICS_PORT=$((port + 2))
. scripts/lib/bench-node.sh
start_bench_node "$port" "$sessions" $((port + 1))
server=127.0.0.1:$port
[ "$tls" = direct ] && server=127.0.0.1:$((port + 1))
slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
slab_before=$(slab_kb)
taskset -c 1 target/release/loadgen --server "$server" --tls "$tls" --users "$sessions" --login-concurrency "${LOGINS_IN_FLIGHT:-500}" \
  --procs 2 connections --hold-secs 20 --server-pid "$server_pid" >"$work/held.log" 2>&1 &
holder=$!
wait_for_sessions "$sessions"
sleep 5
slab_held=$(slab_kb)
curl -s "127.0.0.1:$BENCH_METRICS_PORT/metrics" | grep -E '^martlet_(session|user)_task_bytes' || true
wait "$holder"
grep -E 'sessions|server_rss' "$work/held.log"
echo "kernel slab per connection, both ends: $(( (slab_held - slab_before) * 1024 / sessions )) bytes (Slab in /proc/meminfo, the whole host)"
