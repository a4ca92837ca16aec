#!/usr/bin/env bash
# The paper scenario over TCP, then over RFC 7395 WebSocket, against martlet (issue 12):
#   scripts/bench-websocket.sh [USERS] [MESSAGES]   # default: 2000 users, 60 messages each
# For each transport a fresh martlet (the same build and settings: `cores = 1` pinned to
# CPU 0, embedded storage, SASL PLAIN, plain TCP; WebSocket at [http] listen as behind a TLS
# proxy, so PLAIN is offered over ws:// as over the plain client port), with loadgen (one
# process) pinned to CPU 1:
#   1. connections: USERS idle sessions held 5 s, the server's RSS per session;
#   2. paper: USERS users each send MESSAGES chat messages, one a second, to random users:
#      delivered/sent, p50/p99 latency, the server's CPU while sending (% of a core, and
#      microseconds per message with the drain), loadgen's own CPU (near 100 %: the
#      generator, not the server, was the limit).
# Writes tuning/results/DATE-websocket-vs-tcp.md: the figures side by side, WS/TCP, box load.
set -euo pipefail
cd "$(dirname "$0")/.."
users=${1:-2000} messages=${2:-60}
port=${BENCH_PORT:-26330}   # below the ephemeral range; +1 WebSocket
[ -n "${MARTLET_BIN:-}" ] || cargo build --release --quiet -p martlet -p loadgen
export MARTLET_BIN=${MARTLET_BIN:-target/release/martlet} BENCH_CORES=1 BENCH_PIN=0 BENCH_HTTP_PORT=$((port + 1))
. scripts/lib/bench-node.sh
results=$(mktemp -d)   # removed at the end (start_bench_node's trap is the server's)
load_before=$(cat /proc/loadavg)

# One transport on a fresh server: `run_transport NAME LOADGEN-TRANSPORT-ARGS...`.
run_transport() {
  local name=$1; shift
  start_bench_node "$port" "$users"
  local load=(taskset -c 1 target/release/loadgen "$@" --users "$users" --login-concurrency 200)
  "${load[@]}" --out "$results/$name-conn.json" connections --hold-secs 5 --server-pid "$server_pid" >/dev/null
  "${load[@]}" --out "$results/$name-paper.json" paper --messages "$messages" --interval-ms 1000 --server-pid "$server_pid" >/dev/null
  kill "$server_pid"
  wait "$server_pid" || true
  rm -rf "$work"
}
run_transport tcp --server "127.0.0.1:$port"
run_transport ws --transport websocket --ws-url "ws://127.0.0.1:$BENCH_HTTP_PORT/xmpp-websocket"
load_after=$(cat /proc/loadavg)

out="tuning/results/$(date -u +%Y-%m-%d)-websocket-vs-tcp.md"
python3 - "$results" "$users" "$messages" >"$out.table" <<'PY'
import json, sys
results, users, messages = sys.argv[1], sys.argv[2], sys.argv[3]
r = {f"{t}-{s}": json.load(open(f"{results}/{t}-{s}.json")) for t in ("tcp", "ws") for s in ("conn", "paper")}
rows = [
    ("paper", "sent", "sent"), ("paper", "delivered", "delivered"), ("paper", "delivery_ratio", "delivery ratio"),
    ("paper", "login_errors", "login errors"), ("paper", "send_errors", "send errors"),
    ("paper", "latency_p50_ms", "latency p50, ms"), ("paper", "latency_p99_ms", "latency p99, ms"),
    ("paper", "latency_p999_ms", "latency p99.9, ms"),
    ("paper", "server_cpu_pct_of_core", "server CPU while sending, % of a core"),
    ("paper", "server_cpu_us_per_msg", "server CPU per message (drain included), us"),
    ("paper", "generator_cpu_pct_of_core", "loadgen CPU while sending, % of a core"),
    ("paper", "bytes_per_delivered", "bytes on the wire per delivered message (both ways, loadgen's side)"),
    ("conn", "logins_per_sec", "logins/s (connections)"),
    ("conn", "server_rss_per_session_bytes", "server RSS per idle session, bytes"),
]
print(f"| paper N={users} x {messages} msgs @1/s | TCP | WebSocket | WS/TCP |")
print("|---|---|---|---|")
for scenario, field, label in rows:
    tcp, ws = r[f"tcp-{scenario}"].get(field), r[f"ws-{scenario}"].get(field)
    ratio = f"{ws / tcp:.2f}" if isinstance(tcp, (int, float)) and isinstance(ws, (int, float)) and tcp else "-"
    print(f"| {label} | {tcp} | {ws} | {ratio} |")
PY
{
  echo "# martlet: the paper scenario over TCP vs WebSocket — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- commit: \`$(git rev-parse --short HEAD)\`$(git diff --quiet || echo ' (with uncommitted changes)')"
  echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r)"
  echo "- server: martlet release build, \`cores = 1\` pinned to CPU 0, embedded storage, SASL PLAIN; a fresh server per transport; WebSocket at \`[http] listen\` with \`behind_tls_proxy = true\` (ws://, no TLS), TCP without TLS"
  echo "- load: one loadgen process pinned to CPU 1, $users users, connections (held 5 s) then paper ($messages messages each at 1 msg/s, 5 s drain)"
  echo "- box load (/proc/loadavg) before: $load_before; after: $load_after"
  echo
  cat "$out.table"
} >"$out"
rm -rf "$out.table" "$results"
cat "$out"
