#!/usr/bin/env bash
# What idle sessions cost the busy ones, on one node (issue 13: flat cost):
#   scripts/bench-idle-cost.sh [IDLE...]        # default: 0 15000
#   MARTLET_BIN=path/to/martlet scripts/bench-idle-cost.sh 0 15000   # another build
# For each IDLE count: a fresh martlet (`cores = 1`, pinned to CPU 0; embedded storage,
# plain TCP + PLAIN, defaults otherwise) holds IDLE idle sessions (loadgen `connections`,
# two processes, pinned to CPU 1), then `loadgen paper` runs 1,000 users x 15 messages at
# 1/s each (also on CPU 1); both connect from 64 loopback addresses (BENCH_SOURCES). Prints
# one line per IDLE: the paper run's latencies and login rate, and the server's CPU seconds
# over it (utime + stime: its logins' PBKDF2 and the archive's writes included). With
# PERF=1, also a `perf record -e cpu-clock` profile of the server during the paper run,
# kept in the printed directory. One process may hold 20,000 files here: IDLE up to about
# 18,000.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@"); [ $# -gt 0 ] || counts=(0 15000)
port=${BENCH_PORT:-26222}   # below the ephemeral range
# Both load generators connect from this many loopback addresses: with 15,000 sessions held
# from 127.0.0.1 to the server's port, each further connect() from 127.0.0.1 spends ~1.3 ms
# of the load generator's time looking for a free ephemeral port (scripts/bench-connect-scan.py),
# which halved the paper run's logins and was once taken for the server's cost. 0: 127.0.0.1 only.
sources=${BENCH_SOURCES:-64}
[ -n "${MARTLET_BIN:-}" ] || cargo build --release --quiet -p martlet -p loadgen
export MARTLET_BIN=${MARTLET_BIN:-target/release/martlet} BENCH_CORES=1 BENCH_PIN=0
. scripts/lib/bench-node.sh

for idle in "${counts[@]}"; do
  start_bench_node "$port" $((idle + 1000))
  server=$server_pid holder=
  if [ "$idle" -gt 0 ]; then
    taskset -c 1 target/release/loadgen --server "127.0.0.1:$port" --first 1001 --users "$idle" --login-concurrency 500 --source-addresses "$sources" \
      --procs 2 connections --hold-secs 100000 >"$work/idle.log" 2>&1 &
    holder=$!
    wait_for_sessions "$idle"
    sleep 3
  fi
  cpu_before=$(awk '{print $14 + $15}' /proc/$server/stat)
  if [ -n "${PERF:-}" ]; then
    perf record -e cpu-clock -g -p "$server" -o "$work/perf.data" -- sleep 12 >/dev/null 2>&1 &
  fi
  taskset -c 1 target/release/loadgen --server "127.0.0.1:$port" --users 1000 --source-addresses "$sources" --out "$work/paper.json" paper --messages 15 >/dev/null
  cpu_after=$(awk '{print $14 + $15}' /proc/$server/stat)
  python3 - "$work/paper.json" "$idle" "$cpu_before" "$cpu_after" "$(getconf CLK_TCK)" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
idle, before, after, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
print(f"idle {idle}: delivered {j['delivered']}/{j['sent']}, p50 {j['latency_p50_ms']} ms, p99 {j['latency_p99_ms']} ms, "
      f"p99.9 {j['latency_p999_ms']} ms, logins/s {j['logins_per_sec']}, server CPU {(after - before) / hz:.2f} s")
PY
  kill $server $holder 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "${PERF:-}" ]; then cp "$work/perf.data" "perf-idle-$idle.data"; echo "  profile: perf-idle-$idle.data"; fi
  rm -rf "$work"
done
