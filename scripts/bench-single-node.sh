#!/usr/bin/env bash
# Single-node benchmark of martlet on this machine, recorded in tuning/results/.
#   scripts/bench-single-node.sh [--quick]
# Starts a release martlet on loopback (plain TCP + PLAIN, as load tools connect to every
# server under test), provisions accounts, then runs with benches/loadgen:
#   1. paper      N=1000 users x 10 messages at 1 msg/s each (seed 001 §5.1, shortened)
#   2. rate steps offered total rates until p99 > 10 ms or delivery < 99.9 % (the knee)
#   3. connections 15,000 idle sessions: server RSS per session, login rate
# and writes a markdown table with date, commit, machine and settings.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=${1:-}
port=${BENCH_PORT:-25222}  # below the ephemeral ports (32768+), which other runs' sockets may hold
users=15000; [ "$quick" = --quick ] && users=3000
. scripts/lib/bench-node.sh
start_bench_node "$port" "$users"

lg --users 1000 --out "$work/paper.json" paper --messages 10 >/dev/null
knee=0
for rate in 10000 20000 40000 60000 80000 100000 120000 150000; do
  lg --users 1000 --out "$work/rate-$rate.json" rate --rate "$rate" --secs 5 >/dev/null
  p99=$(field "$work/rate-$rate.json" latency_p99_ms); ratio=$(field "$work/rate-$rate.json" delivery_ratio)
  echo "rate $rate: p99 $p99 ms, delivery $ratio"
  if python3 -c "import sys; sys.exit(0 if float('$p99') <= 10 and float('$ratio') >= 0.999 else 1)"; then knee=$rate; else break; fi
done
lg --users "$users" --login-concurrency 500 --out "$work/conn.json" connections --hold-secs 1 --server-pid "$server_pid" >/dev/null

out="tuning/results/$(date -u +%Y-%m-%d)-single-node.md"
{
  echo "# martlet single node — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- commit: \`$(git rev-parse --short HEAD)\`$(git diff --quiet || echo ' (with uncommitted changes)')"
  echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r)"
  echo "- server: martlet release build, cores = all ($(nproc)), plain TCP + SASL PLAIN, embedded storage; load generator on the same box (one thread)"
  echo
  echo "| scenario | figure | value |"
  echo "|---|---|---|"
  for f in sent delivered delivery_ratio latency_p50_ms latency_p99_ms latency_p999_ms latency_max_ms logins_per_sec; do
    echo "| paper N=1000 x 10 msgs @1/s | $f | $(field "$work/paper.json" $f) |"
  done
  for j in "$work"/rate-*.json; do
    r=$(basename "$j" .json | cut -d- -f2)
    echo "| rate $r msg/s offered | delivered/sent, p50/p99/p999 ms | $(field "$j" delivered)/$(field "$j" sent), $(field "$j" latency_p50_ms)/$(field "$j" latency_p99_ms)/$(field "$j" latency_p999_ms) |"
  done
  echo "| knee (p99 <= 10 ms, delivery >= 99.9 %) | msg/s | $knee |"
  for f in sessions logins_per_sec server_rss_per_session_bytes; do
    echo "| connections N=$users idle | $f | $(field "$work/conn.json" $f) |"
  done
} > "$out"
cat "$out"
