#!/usr/bin/env bash
# What a hop between nodes costs: the same load against one martlet node (2 cores) and
# against a cluster of two nodes on this box (1 core each, so the same cores in all), on
# one PostgreSQL database. loadgen runs two processes; against the cluster each process's
# users connect to their own node, so a message goes to a user of either node and, for
# about half, crosses the mesh (and again when the owner of the recipient is the third
# party: sender node -> owner node -> recipient's node).
#
#   scripts/bench-cluster.sh [USERS] [RATE]     # default 2000 users, 10000 msg/s offered
#
# Writes tuning/results/<date>-cluster.md. Everything on 127.0.0.1, every wait bounded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib/bench-node-config.sh
users=${1:-2000}
rate=${2:-10000}
secs=10
work=$(mktemp -d /tmp/bench-cluster.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

cargo build --release --quiet -p martlet -p loadgen
ulimit -n "$(ulimit -Hn)"
server_url=$(scripts/postgres-scratch.sh start)
db=martlet_bench_cluster
psql "$server_url" -qAt -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
url=${server_url%/*}/$db

# node NAME CORES C2S_PORT MESH_PORT [SEED...]: writes its config.
node_config() {
  local name=$1 cores=$2 c2s=$3 mesh=$4; shift 4
  mkdir -p "$work/$name"
  local seeds=""
  for s in "$@"; do seeds+="\"127.0.0.1:$s\", "; done
  bench_node_config "$work/$name/martlet.toml" "$cores" "$c2s" "$((c2s + 1000))" "$work/$name/data" "$url"
  if [ "$mesh" != 0 ]; then
    cat >>"$work/$name/martlet.toml" <<EOF
[cluster]
listen = "127.0.0.1:$mesh"
node_name = "$name"
seeds = [${seeds%, }]
secret = "bench-cluster-secret-0123456789"
EOF
  fi
}

start() {
  target/release/martlet serve --config "$work/$1/martlet.toml" >"$work/$1/log" 2>&1 &
  pids+=($!)
}

wait_port() { for _ in $(seq 100); do ss -ltnH "sport = :$1" | grep -q . && return; sleep 0.2; done; log "port $1 not listening"; exit 1; }

loadgen() { target/release/loadgen --users "$users" --procs 2 --login-concurrency 200 "$@"; }

run_both() { # label, loadgen server options
  local label=$1; shift
  loadgen "$@" --out "$work/$label-paper.json" paper --messages 10 --interval-ms 1000 >/dev/null
  loadgen "$@" --out "$work/$label-rate.json" rate --rate "$rate" --secs "$secs" >/dev/null
}

log "single node, 2 cores"
node_config single 2 27222 0
target/release/martlet --config "$work/single/martlet.toml" user bulk-add --prefix user --count "$users" --password pw >/dev/null
start single
wait_port 27222
run_both single --server 127.0.0.1:27222
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true; pids=()

log "cluster of two nodes, 1 core each"
node_config n1 1 27232 27270 27271
node_config n2 1 27242 27271 27270
start n1; start n2
wait_port 27232; wait_port 27242
for _ in $(seq 50); do
  target/release/martlet --config "$work/n1/martlet.toml" cluster status 2>/dev/null | grep -q "n2 .* up" && break
  sleep 0.2
done
target/release/martlet --config "$work/n1/martlet.toml" cluster status
run_both cluster --servers 127.0.0.1:27232,127.0.0.1:27242
cross=$(curl -s 127.0.0.1:28232/metrics 127.0.0.1:28242/metrics | awk '/^martlet_cross_node_messages_total/ {s += $2} END {print s}')

out=tuning/results/$(date -u +%Y-%m-%d)-cluster.md
python3 - "$work" "$users" "$rate" "$secs" "$cross" >"$out" <<'PY'
import json, subprocess, sys
work, users, rate, secs, cross = sys.argv[1:]
def load(name): return json.load(open(f"{work}/{name}.json"))
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(f"# martlet: one node vs a two-node cluster — cross-node cost\n")
print(f"- command: `scripts/bench-cluster.sh {users} {rate}`; commit `{commit}`")
print("- machine: 2 cores, loopback; both setups on the same PostgreSQL; loadgen: 2 processes, plain TCP + PLAIN")
print("- single: one node, `cores = 2`. cluster: two nodes, `cores = 1` each, mesh on loopback; each loadgen process on its own node")
print(f"- mesh messages counted by the cluster's nodes over both runs: {cross}\n")
print("| run | figure | single node | cluster | cluster - single |")
print("|---|---|---|---|---|")
for kind, label in [("paper", f"paper N={users}, 10 msgs @1/s"), ("rate", f"{rate} msg/s for {secs} s")]:
    a, b = load(f"single-{kind}"), load(f"cluster-{kind}")
    print(f"| {label} | delivered/sent | {a['delivered']}/{a['sent']} | {b['delivered']}/{b['sent']} | |")
    for k in ["latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_p999_ms"]:
        print(f"| {label} | {k.replace('latency_', '').replace('_ms', '')} ms | {a[k]} | {b[k]} | {b[k] - a[k]:+.3f} |")
PY
cat "$out"
log "written to $out"
