#!/usr/bin/env bash
# A cluster at scale on this one box (issue 4): NODES martlet nodes (1 core each) on
# loopback hold IDLE idle sessions in total, spread evenly, and while they are held ACTIVE
# further users run the paper scenario (MESSAGES chat messages each, one per second, to
# random users of any node) across every node. The paper scenario also runs once before the
# idle sessions log in, on the same empty cluster, so what holding them costs shows apart
# from what the number of nodes costs.
#
#   scripts/bench-cluster-scale.sh [NODES] [IDLE] [ACTIVE] [MESSAGES]   # default 12 204000 2000 30
#   BIN=/tmp/scale-bin BIN_COMMIT=abc1234 scripts/bench-cluster-scale.sh
#
# BIN: a directory with prebuilt release `martlet` and `loadgen` (then nothing is built);
# BIN_COMMIT: the commit they were built from, for the results file. Without BIN both are
# built here and the commit is this checkout's HEAD. RESULTS_NAME: the results file's name
# after its date (default cluster-scale; scripts/bench-million.sh says million).
#
# One process may hold 20,000 open files here (`ulimit -n`, hard): so no node may hold more
# than about 19,000 sessions, and NODES must be at least about IDLE / 19,000 (12 for
# 204,000). Each loadgen process holds one node's share, so the same bound holds for them.
# The load connects from 256 loopback addresses (`source_addresses` below), so the 28,232
# ephemeral ports (32768-60999) of one address are never the bound.
#
# Bench-only settings, not for production (said so in the results file too): with them,
# provisioning 206,000 accounts takes under a minute here; without, each account is a
# commit waiting for its WAL flush and 4096 PBKDF2 rounds per SCRAM mechanism.
# - the run's database has synchronous_commit = off: a commit returns before its WAL is
#   on disk, so a crash may lose the last commits (never corrupts); nothing here survives
#   the run anyway.
# - accounts are made with scram_iterations = 64 instead of 4096: each login derives PBKDF2
#   with 64 rounds, so logins here are far cheaper than in production and the login rate is
#   not comparable with compare.sh's (4096 rounds).
#
# Writes tuning/results/<date>-cluster-scale.md. Everything on 127.0.0.1, every wait
# bounded, every process started here is ended on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib/bench-node-config.sh
nodes=${1:-12}
idle=${2:-204000}
active=${3:-2000}
messages=${4:-30}
started_at=$(date +%s)

# Ports below the ephemeral range (32768-60999), so no client socket can take them.
c2s_port_base=27400
metrics_port_base=28400
mesh_port_base=29400
bench_scram_iterations=64
# loadgen's idle clients neither send nor answer a ping: with the defaults (ping after 120 s,
# closed after 600 s of silence) the server would close the first of them mid-run.
session_silence_max_secs=3600
# Logins in flight over every load process (one per node). At 2,400 (200 in each of 12
# processes) on these 2 cores a few dozen logins of 204,000 failed; fewer in flight keeps
# each login short. Each process takes its share, at most 50.
logins_in_flight_max=600
login_concurrency_per_process_max=50
# Open files a node needs besides its sessions (mesh peers, PostgreSQL pool, listeners,
# io_uring, logs); measured on the started nodes below, this is the bound checked first.
node_fds_besides_sessions_max=200
# Slowest whole-cluster login rate accepted before giving up, in logins per second, and
# the longest the session count may stand still (a login that failed its retries is not made again).
login_rate_min_per_sec=100
login_stall_secs_max=60
# The idle fill tries a failed login again (each retry is logged in idle.log, and the run's
# log counts them): of a million logins on 2 busy cores a few may time out, and a session
# short would stall the fill. The paper runs never retry: their login errors are reported.
idle_login_retries=3
# Every node must see every other up within this, plus a second per node (53 nodes on 2
# cores take a while to start).
membership_wait_secs=60
# The fill stops (the run fails, saying how far it got) when the host's MemAvailable falls
# below this: a million sessions need most of this box's memory, and the OOM killer would
# pick a node or PostgreSQL rather than stop the run.
host_memory_available_min_mib=1536
# Length of the CPU samples taken with no traffic, with and without the idle sessions.
quiet_sample_secs=10
# Beyond its messages, what a paper run may take: logins, the start barrier, the drain.
paper_overhead_secs_max=300
# Loopback addresses the load connects from (127.1.0.0 onwards). From 127.0.0.1 alone, one
# node port can be reached from at most the 28,232 ephemeral ports, and past ~14,100 of them
# (the even half, which connect() tries first) every connect() scanned the rest: the first
# million-session run slowed from ~340 to ~55 logins/s at 750,000 sessions, 51 % of the box
# in __inet_check_established (tuning/results/2026-12-05-million-first-attempt.md).
source_addresses=256
# Each port may take this long to listen once its node started: 53 nodes starting at once
# on two cores take a while.
port_wait_secs=$((30 + nodes))
group_exit_wait_secs=30

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
fail() { log "$*"; exit 1; }

if [ -n "${BIN:-}" ]; then
  bin=$BIN
  commit=${BIN_COMMIT:-"unknown (prebuilt in $BIN)"}
else
  cargo build --release --quiet -p martlet -p loadgen
  bin=target/release
  commit=$(git rev-parse --short HEAD)
fi
[ -x "$bin/martlet" ] && [ -x "$bin/loadgen" ] || fail "no martlet and loadgen in $bin"

ulimit -n "$(ulimit -Hn)"
fds_max=$(ulimit -n)
ephemeral_ports=$(awk '{print $2 - $1 + 1}' /proc/sys/net/ipv4/ip_local_port_range)
per_node_sessions=$(( (idle + nodes - 1) / nodes + (active + nodes - 1) / nodes ))
login_concurrency=$(( logins_in_flight_max / nodes ))
[ "$login_concurrency" -le "$login_concurrency_per_process_max" ] || login_concurrency=$login_concurrency_per_process_max
[ "$login_concurrency" -ge 1 ] || login_concurrency=1
results_name=${RESULTS_NAME:-cluster-scale}
if [ $((per_node_sessions + node_fds_besides_sessions_max)) -gt "$fds_max" ]; then
  fail "$per_node_sessions sessions per node + $node_fds_besides_sessions_max other files exceed the $fds_max open files a process may hold: use more nodes"
fi
[ "$per_node_sessions" -lt "$ephemeral_ports" ] || fail "$per_node_sessions sessions per node exceed the $ephemeral_ports ephemeral ports to one address: use more nodes"

# Loopback queues every packet on a per-CPU backlog of net.core.netdev_max_backlog packets
# (1000 by default) and drops what does not fit. Sessions that logged in within the same
# ~2 s share a kernel timer-wheel slot, so their TCP keepalive probes (martlet's: after
# 120 s of silence; unanswered, again every 20 s, 4 times) go out at once; beyond 1000 at
# once probes and answers are dropped, the same ones each time, and the server aborts those
# sessions while the client still counts them (a first run lost 66,000 of 204,000 so;
# TcpExtTCPAbortOnTimeout). So the backlog is raised for the run to room for every
# session's probe, and restored on exit.
backlog=/proc/sys/net/core/netdev_max_backlog
backlog_packets_was=$(cat "$backlog")

work=$(mktemp -d /tmp/bench-cluster-scale.XXXXXX)
node_pids=()
load_pid=""
cleanup() {
  # The idle loadgen runs in its own session: its group holds the parent and its children,
  # which are not this shell's to wait for; closing 200,000 sockets takes them a few seconds.
  if [ -n "$load_pid" ]; then
    kill -- "-$load_pid" 2>/dev/null || true
    for _ in $(seq "$((group_exit_wait_secs * 5))"); do kill -0 -- "-$load_pid" 2>/dev/null || break; sleep 0.2; done
  fi
  for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # A node that outlives SIGTERM by this long is reported and killed, not waited for: after
  # the first million-session run 19 of 53 slept through it (tuning/README.md).
  for _ in $(seq "$((group_exit_wait_secs * 5))"); do
    alive=0; for p in "${node_pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break; sleep 0.2
  done
  for i in "${!node_pids[@]}"; do
    if kill -0 "${node_pids[$i]}" 2>/dev/null; then
      echo "n$i did not stop within ${group_exit_wait_secs}s of SIGTERM: $(cat "/proc/${node_pids[$i]}/wchan" 2>/dev/null); killed" >&2
      kill -9 "${node_pids[$i]}" 2>/dev/null || true
    fi
  done
  wait 2>/dev/null || true
  echo "$backlog_packets_was" >"$backlog"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ "$backlog_packets_was" -lt "$idle" ]; then
  echo "$idle" >"$backlog" || fail "cannot raise $backlog to $idle (needs root)"
fi

server_url=$(scripts/postgres-scratch.sh start)
db=martlet_bench_cluster_scale
psql "$server_url" -qAt -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
psql "$server_url" -qAt -c "ALTER DATABASE $db SET synchronous_commit = off"
url=${server_url%/*}/$db

# Each node's pool holds one PostgreSQL connection per storage worker (storage::WORKERS;
# provisioning opens one such pool before the nodes start). The server is shared: count
# what others hold.
pool_connections=$(sed -n 's/^const WORKERS: usize = \([0-9]*\);.*/\1/p' src/storage/mod.rs)
[ -n "$pool_connections" ] || fail "no storage WORKERS constant in src/storage/mod.rs"
pg_connections_max=$(psql "$server_url" -qAt -c "SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int")
pg_connections_used=$(psql "$server_url" -qAt -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
pg_connections_needed=$((nodes * pool_connections))
if [ $((pg_connections_used + pg_connections_needed)) -gt "$pg_connections_max" ]; then
  fail "PostgreSQL allows $pg_connections_max connections, $pg_connections_used in use, this run needs $pg_connections_needed: raise max_connections in scripts/postgres-scratch.sh"
fi

c2s_port() { echo $((c2s_port_base + $1)); }
metrics_port() { echo $((metrics_port_base + $1)); }
mesh_port() { echo $((mesh_port_base + $1)); }

# node_config I: every node joins through node 0, and node 0 through node 1.
node_config() {
  local i=$1 seed=0
  [ "$i" != 0 ] || seed=1
  mkdir -p "$work/n$i"
  bench_node_config "$work/n$i/martlet.toml" 1 "$(c2s_port "$i")" "$(metrics_port "$i")" "$work/n$i/data" "$url" \
    "scram_iterations = $bench_scram_iterations" \
    "$(printf 'idle_timeout_secs = %s\nping_interval_secs = %s' "$session_silence_max_secs" "$session_silence_max_secs")"
  cat >>"$work/n$i/martlet.toml" <<EOF
[archive]
enabled = false
[cluster]
listen = "127.0.0.1:$(mesh_port "$i")"
node_name = "n$i"
seeds = ["127.0.0.1:$(mesh_port "$seed")"]
secret = "bench-cluster-secret-0123456789"
EOF
}

listening() { ss -ltnH "sport = :$1" | grep -q .; }
wait_port() {
  local deadline=$((SECONDS + port_wait_secs))
  until listening "$1"; do [ "$SECONDS" -lt "$deadline" ] || fail "port $1 not listening after ${port_wait_secs}s"; sleep 0.2; done
}

metrics() { for i in $(seq 0 $((nodes - 1))); do curl -sf "127.0.0.1:$(metrics_port "$i")/metrics"; done; }
# metric_sum NAME: over every core of every node.
metric_sum() { metrics | awk -v m="$1" '$1 ~ "^"m"[{]" {s += $2} END {printf "%d\n", s}'; }
node_sessions() { curl -sf "127.0.0.1:$(metrics_port "$1")/metrics" | awk '$1 ~ /^martlet_sessions[{]/ {s += $2} END {printf "%d\n", s}'; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
mem_available_mib() { awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo; }
# memory NAME: the host's /proc/meminfo, and the RSS of every process of the idle loadgen
# (its group: the parent and one child per node) in kB, one line.
memory() {
  cp /proc/meminfo "$work/$1.meminfo"
  cat /proc/slabinfo >"$work/$1.slabinfo" 2>/dev/null || : >"$work/$1.slabinfo" # root only
  if [ -n "$load_pid" ]; then
    ps -o rss= -g "$load_pid" | awk '{s += $1} END {print s + 0}'
  else
    echo 0
  fi >"$work/$1.loadgen-rss"
}
fds() { ls "/proc/$1/fd" | wc -l; }
servers=$(for i in $(seq 0 $((nodes - 1))); do printf '127.0.0.1:%s,' "$(c2s_port "$i")"; done)
servers=${servers%,}
load=(--procs "$nodes" --servers "$servers" --login-concurrency "$login_concurrency" --source-addresses "$source_addresses")
# paper NAME: the paper scenario across every node, bounded (timeout ends its whole group);
# its CPU time is taken by time(1), as its processes are gone by the next mark.
paper() {
  timeout "$((messages + paper_overhead_secs_max))" /usr/bin/time -f '%U %S' -o "$work/paper-$1.time" \
    "$bin/loadgen" "${load[@]}" --prefix user --users "$active" \
    --out "$work/paper-$1.json" paper --messages "$messages" --interval-ms 1000 >/dev/null
}
nodes_alive() { for i in "${!node_pids[@]}"; do kill -0 "${node_pids[$i]}" 2>/dev/null || fail "n$i died: $(tail -5 "$work/n$i/log")"; done; }
# snapshot NAME: every node's sessions, RSS (kB) and open files, one line per node.
snapshot() {
  for i in $(seq 0 $((nodes - 1))); do
    echo "n$i $(node_sessions "$i") $(rss_kb "${node_pids[$i]}") $(fds "${node_pids[$i]}")"
  done >"$work/$1.nodes"
}
# mark NAME: what two marks are compared by: the nodes' counters summed, the box's CPU time
# (/proc/stat), every process's CPU time (this box is shared: others' work shows there), and
# the kernel's TCP and loopback counters (the run is only sound if loopback dropped nothing
# and no connection was aborted).
mark() {
  metrics | awk '$1 ~ /^martlet_[a-z_]+[{]/ {sub(/[{].*/, "", $1); s[$1] += $2} END {for (k in s) print k, s[k]}' | sort >"$work/$1.counters"
  head -1 /proc/stat >"$work/$1.cpu"
  cat /proc/[0-9]*/stat >"$work/$1.procs" 2>/dev/null || true # some end while read
  cat /proc/net/netstat >"$work/$1.netstat"
  cat /proc/net/softnet_stat >"$work/$1.softnet"
}
# quiet NAME: the box for quiet_sample_secs with no traffic.
quiet() { mark "quiet-$1-start"; sleep "$quiet_sample_secs"; mark "quiet-$1-end"; }

for i in $(seq 0 $((nodes - 1))); do
  for p in "$(c2s_port "$i")" "$(metrics_port "$i")" "$(mesh_port "$i")"; do
    ! listening "$p" || fail "port $p is taken"
  done
  node_config "$i"
done

log "provisioning $idle idle and $active active accounts (scram_iterations = $bench_scram_iterations)"
provision_started=$SECONDS
"$bin/martlet" --config "$work/n0/martlet.toml" user bulk-add --prefix idle --count "$idle" --password pw >/dev/null
"$bin/martlet" --config "$work/n0/martlet.toml" user bulk-add --prefix user --count "$active" --password pw >/dev/null
provision_secs=$((SECONDS - provision_started))

log "starting $nodes nodes"
for i in $(seq 0 $((nodes - 1))); do
  "$bin/martlet" serve --config "$work/n$i/martlet.toml" >"$work/n$i/log" 2>&1 &
  node_pids+=($!)
done
for i in $(seq 0 $((nodes - 1))); do wait_port "$(c2s_port "$i")"; wait_port "$(metrics_port "$i")"; done
deadline=$((SECONDS + membership_wait_secs + nodes))
for i in $(seq 0 $((nodes - 1))); do
  until [ "$("$bin/martlet" --config "$work/n$i/martlet.toml" cluster status 2>/dev/null | awk '$3 == "up"' | wc -l)" = "$nodes" ]; do
    [ "$SECONDS" -lt "$deadline" ] || fail "n$i does not see all $nodes nodes up after $((membership_wait_secs + nodes))s: $("$bin/martlet" --config "$work/n$i/martlet.toml" cluster status 2>&1)"
    sleep 0.5
  done
done
node_fds=$(for p in "${node_pids[@]}"; do fds "$p"; done | sort -n | tail -1)
if [ $((per_node_sessions + node_fds)) -gt "$fds_max" ]; then
  fail "a node holds $node_fds files before any session; with $per_node_sessions sessions it passes $fds_max: use more nodes"
fi
echo "${node_pids[@]}" >"$work/node-pids"
pg_connections_run=$(psql "$server_url" -qAt -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$db'")

quiet empty
log "paper, $active users x $messages messages, on the empty cluster"
mark paper-empty-start
paper empty
mark paper-empty-end
snapshot before
memory before

log "logging in $idle idle sessions"
login_started=$SECONDS
setsid "$bin/loadgen" "${load[@]}" --login-retries "$idle_login_retries" --prefix idle --users "$idle" connections --hold-secs "$session_silence_max_secs" >"$work/idle.log" 2>&1 &
load_pid=$!
login_wait_secs=$((idle / login_rate_min_per_sec + 60))
deadline=$((SECONDS + login_wait_secs))
held=0 last_change=$SECONDS last_log=$SECONDS
# Each poll reads every node's metrics: with many nodes, poll less often.
poll_secs=$((1 + nodes / 20))
until [ "$held" = "$idle" ]; do
  kill -0 "$load_pid" 2>/dev/null || fail "the idle loadgen ended early: $(tail -5 "$work/idle.log")"
  nodes_alive
  [ "$SECONDS" -lt "$deadline" ] || fail "$held of $idle sessions after ${login_wait_secs}s: $(tail -5 "$work/idle.log")"
  available=$(mem_available_mib)
  [ "$available" -ge "$host_memory_available_min_mib" ] ||
    fail "stopped at $held of $idle sessions: MemAvailable $available MiB, below $host_memory_available_min_mib; $(grep -E '^(Slab|SUnreclaim)' /proc/meminfo | tr -s ' ' | tr '\n' ' ')"
  [ $((SECONDS - last_change)) -lt "$login_stall_secs_max" ] ||
    fail "$held of $idle sessions, none more for ${login_stall_secs_max}s; per node: $(for i in $(seq 0 $((nodes - 1))); do printf '%s ' "$(node_sessions "$i")"; done); loadgen: $(sort "$work/idle.log" | uniq -c | tr '\n' ';')"
  sleep "$poll_secs"
  now=$(metric_sum martlet_sessions)
  [ "$now" = "$held" ] || last_change=$SECONDS
  held=$now
  echo "$((SECONDS - login_started)) $held $available" >>"$work/fill.txt"
  if [ $((SECONDS - last_log)) -ge 60 ]; then
    log "$held of $idle sessions after $((SECONDS - login_started))s, MemAvailable $available MiB"
    last_log=$SECONDS
  fi
done
login_secs=$((SECONDS - login_started))
log "$idle sessions held after ${login_secs}s; logins retried: $(grep -c 'login failed, retrying' "$work/idle.log" || true)"
free -m >"$work/free-held.txt"
# Memory first: snapshot lists every node's /proc/PID/fd, and the kernel caches an inode
# and a dentry for each file listed (1.3 kB per session, reclaimable, but counted).
memory held
snapshot held
quiet held

log "paper, $active users x $messages messages, while $idle are held"
mark paper-held-start
paper held
mark paper-held-end
snapshot after
[ "$(metric_sum martlet_sessions)" = "$idle" ] || log "warning: $(metric_sum martlet_sessions) sessions after the paper run, $idle expected"

out=tuning/results/$(date -u +%Y-%m-%d)-$results_name.md
command="${BIN:+BIN=$BIN }${BIN_COMMIT:+BIN_COMMIT=$BIN_COMMIT }scripts/bench-cluster-scale.sh $nodes $idle $active $messages"
python3 - "$work" "$commit" "$command" "$nodes" "$idle" "$active" "$messages" "$login_secs" "$provision_secs" \
  "$login_concurrency" "$bench_scram_iterations" "$session_silence_max_secs" "$(( $(date +%s) - started_at ))" \
  "$pg_connections_run" "$pg_connections_max" "$fds_max" "$(cat "$backlog")" "$(nproc)" "$(getconf CLK_TCK)" >"$out" <<'PY'
import json, sys
work, commit, command = sys.argv[1:4]
(nodes, idle, active, messages, login_secs, provision_secs, concurrency, iterations, silence, run_secs,
 pg_connections, pg_connections_max, fds_max, backlog_packets, cpus, ticks_per_sec) = map(int, sys.argv[4:])

def nodes_file(name):
    return [dict(zip(["node", "sessions", "rss_kb", "fds"], [l.split()[0]] + list(map(int, l.split()[1:])))) for l in open(f"{work}/{name}.nodes")]
def counters(name):
    return {k: int(float(v)) for k, v in (l.split() for l in open(f"{work}/{name}.counters"))}
def delta(a, b, name):
    return counters(b).get(name, 0) - counters(a).get(name, 0)
def used_mib(name):
    return next(int(l.split()[2]) for l in open(f"{work}/{name}") if l.startswith("Mem:"))
papers = {"empty": json.load(open(f"{work}/paper-empty.json")), "held": json.load(open(f"{work}/paper-held.json"))}
before, held, after = nodes_file("before"), nodes_file("held"), nodes_file("after")

print("# martlet: a cluster at scale on one box — idle sessions held, paper scenario across it\n")
print(f"- command: `{command}`; binaries built from commit `{commit}`; whole run {run_secs} s")
print("- machine: 2 cores, 24 GiB, loopback; every node, PostgreSQL and the load generator share the same 2 cores")
print(f"- cluster: {nodes} martlet nodes on 127.0.0.1, `cores = 1` each, mesh on loopback, one PostgreSQL database; "
      "plain TCP + SASL PLAIN; `[archive] enabled = false` (its cost is measured in 2026-12-01-archive-cost.md)")
print(f"- load: `loadgen --procs {nodes} --servers <every node>`: load process i holds its users on node i; "
      f"{concurrency} logins in flight per process")
print(f"- bench-only settings: the database has `synchronous_commit = off` and accounts were made with "
      f"`scram_iterations = {iterations}` (not 4096), so provisioning {idle + active} accounts took {provision_secs} s; "
      f"logins here are cheaper than in production and their rate is not comparable with compare.sh's; "
      f"`idle_timeout_secs` and `ping_interval_secs` = {silence}, since the idle clients never answer a ping")
print(f"- idle sessions: {idle} (`loadgen connections`, prefix `idle`), all held after {login_secs} s "
      f"from the start of their load to the nodes' `martlet_sessions` summing to {idle} ({idle / max(login_secs, 1):.0f} logins/s); "
      f"logins tried again after a failure: {sum('login failed, retrying' in l for l in open(f'{work}/idle.log', errors='replace'))}")
print(f"- paper: {active} users (prefix `user`), {messages} messages each at 1/s to random users of any node; "
      "run once on the empty cluster, then while the idle sessions are held")
print(f"- host memory used (`free -m`): {used_mib('free-held.txt')} MiB with every session held; "
      f"PostgreSQL connections of the run's database: {pg_connections} (of {pg_connections_max} allowed); "
      f"open files per process at most {fds_max}")
print("- RSS before: each node's VmRSS after the first paper run, before the idle logins; "
      "kB per session: (held - before) / sessions held\n")

print("| node | sessions held | RSS before MiB | RSS held MiB | kB per session | open files held |")
print("|---|---|---|---|---|---|")
for e, h in zip(before, held):
    per = (h["rss_kb"] - e["rss_kb"]) / max(h["sessions"], 1)
    print(f"| {h['node']} | {h['sessions']} | {e['rss_kb'] / 1024:.1f} | {h['rss_kb'] / 1024:.1f} | {per:.2f} | {h['fds']} |")
total_s = sum(h["sessions"] for h in held)
total_rss = sum(h["rss_kb"] for h in held)
total_delta = total_rss - sum(e["rss_kb"] for e in before)
print(f"| all | {total_s} | {sum(e['rss_kb'] for e in before) / 1024:.1f} | {total_rss / 1024:.1f} | {total_delta / max(total_s, 1):.2f} | |")
print(f"\nSessions after the second paper run: {sum(a['sessions'] for a in after)} (every node: {', '.join(str(a['sessions']) for a in after)}).\n")

def meminfo(name):
    return {l.split(":")[0]: int(l.split()[1]) for l in open(f"{work}/{name}.meminfo")}
def loadgen_rss_kb(name):
    return int(open(f"{work}/{name}.loadgen-rss").read())
m0, m1 = meminfo("before"), meminfo("held")
per = lambda kb: f"{kb * 1024 / max(total_s, 1):,.0f}"
host_kb = m0["MemAvailable"] - m1["MemAvailable"]
slab_kb = m1["Slab"] - m0["Slab"]
print(f"Memory, from before the idle logins to every session held ({total_s} sessions; the kernel's "
      "share counts both ends of each connection, as both are on this host):\n")
print("| what | grew by MiB | bytes per session |")
print("|---|---|---|")
for label, kb in [("host (`MemAvailable` fell by)", host_kb),
                  ("martlet nodes' RSS", total_delta),
                  ("the idle load generator's RSS", loadgen_rss_kb("held") - loadgen_rss_kb("before")),
                  ("kernel slab (`Slab`)", slab_kb),
                  ("of it unreclaimable (`SUnreclaim`)", m1["SUnreclaim"] - m0["SUnreclaim"]),
                  ("kernel page tables (`PageTables`)", m1["PageTables"] - m0["PageTables"])]:
    print(f"| {label} | {kb / 1024:,.0f} | {per(kb)} |")
def slabs(name):  # cache -> bytes (active objects x object size)
    out = {}
    for l in open(f"{work}/{name}.slabinfo"):
        f = l.split()
        if len(f) > 3 and not l.startswith(("slabinfo", "#")):
            out[f[0]] = int(f[1]) * int(f[3])
    return out
s0, s1 = slabs("before"), slabs("held")
grown = sorted(((s1[k] - s0.get(k, 0), k) for k in s1), reverse=True)[:8]
if grown and grown[0][0] > 0:
    print("\nThe slab caches that grew most (`/proc/slabinfo`, active objects x object size):\n")
    print("| cache | grew by MiB | bytes per session |")
    print("|---|---|---|")
    for b, k in grown:
        print(f"| `{k}` | {b / 2**20:,.0f} | {b / max(total_s, 1):,.0f} |")
print(f"\nHost memory with every session held: {(m1['MemTotal'] - m1['MemAvailable']) / 1024:,.0f} MiB in use "
      f"of {m1['MemTotal'] / 1024:,.0f} MiB; {len(held)} nodes' RSS before the idle logins "
      f"{sum(e['rss_kb'] for e in before) / 1024:,.0f} MiB.\n")

fill = [tuple(map(int, l.split())) for l in open(f"{work}/fill.txt")]
step = max(idle // 10, 1)
print("Fill, from the start of the idle load (`martlet_sessions` summed over the nodes, polled):\n")
print("| sessions held | at s | logins/s since the row before | host MemAvailable MiB |")
print("|---|---|---|---|")
prev_t, prev_n, target = 0, 0, step
for t, n, avail in fill:
    if n >= target or n == idle:
        print(f"| {n} | {t} | {(n - prev_n) / max(t - prev_t, 1):,.0f} | {avail:,} |")
        prev_t, prev_n = t, n
        while target <= n:
            target += step
print()

print("| paper run | delivered/sent | login errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | stored offline | cross-node frames | custody resends | custody given up | cross-node drops |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
runs = [("empty cluster", "empty"), (f"{idle} idle held", "held")]
for label, key in runs:
    p, a, b = papers[key], f"paper-{key}-start", f"paper-{key}-end"
    cells = [f"{p['delivered']}/{p['sent']}", p["login_errors"]] + [p[f"latency_{q}_ms"] for q in ["p50", "p90", "p99", "p999", "max"]]
    cells += [delta(a, b, f"martlet_{c}_total") for c in ["offline_stored", "cross_node_messages", "custody_resends", "custody_given_up", "cross_node_drops"]]
    print(f"| {label} | " + " | ".join(str(c) for c in cells) + " |")
print("\nCross-node frames: `martlet_cross_node_messages_total`, every frame a core put on the mesh "
      "(messages to owners and to sessions' nodes, confirmations, presence), summed over the nodes.\n")

def tcp_ext(name):
    lines = [l.split() for l in open(f"{work}/{name}.netstat") if l.startswith("TcpExt:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))
def softnet_dropped(name):
    return sum(int(l.split()[1], 16) for l in open(f"{work}/{name}.softnet"))
def cpu_ticks(name):  # user nice system idle iowait irq softirq steal
    return list(map(int, open(f"{work}/{name}.cpu").read().split()[1:9]))
node_pids = set(map(int, open(f"{work}/node-pids").read().split()))
def proc_ticks(name):  # pid -> (command, utime + stime)
    out = {}
    for l in open(f"{work}/{name}.procs", errors="replace"):
        pid, rest = l.split(" ", 1)
        fields = rest[rest.rindex(")") + 2:].split()
        out[int(pid)] = (rest[rest.index("(") + 1:rest.rindex(")")], int(fields[11]) + int(fields[12]))
    return out
def by_command(a, b, paper_time):  # command -> ticks between marks a and b
    pa, groups = proc_ticks(a), {}
    for pid, (comm, t) in proc_ticks(b).items():
        key = "martlet nodes" if pid in node_pids else comm
        groups[key] = groups.get(key, 0) + t - pa.get(pid, (comm, 0))[1]
    if paper_time:
        user, system = map(float, open(f"{work}/{paper_time}").read().split())
        groups["loadgen"] = groups.get("loadgen", 0) + round((user + system) * ticks_per_sec)
    return groups
print(f"CPU, as % of the {cpus} cores' time (`/proc/stat`, and each process's utime + stime; niced: "
      "processes at a lower priority, such as other builds on this shared box; loadgen: the idle one and, "
      "in the paper phases, the paper one; other: the three other commands that used most: "
      "other work on this shared box, and kernel threads):\n")
print("| phase | seconds | busy % | user % | niced % | system % | softirq % | martlet nodes % | loadgen % | postgres % | other | TCP keepalive probes/s |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for label, a, b, paper_time in [
        ("empty cluster, no traffic", "quiet-empty-start", "quiet-empty-end", None),
        ("paper on the empty cluster (its logins included)", "paper-empty-start", "paper-empty-end", "paper-empty.time"),
        (f"{idle} idle held, no traffic", "quiet-held-start", "quiet-held-end", None),
        (f"paper while {idle} are held (its logins included)", "paper-held-start", "paper-held-end", "paper-held.time")]:
    d = [y - x for x, y in zip(cpu_ticks(a), cpu_ticks(b))]
    total, busy = sum(d), sum(d) - d[3] - d[4]
    groups = by_command(a, b, paper_time)
    secs = total / cpus / ticks_per_sec
    probes = tcp_ext(b)["TCPKeepAlive"] - tcp_ext(a)["TCPKeepAlive"]
    pct = lambda t: f"{100 * t / total:.0f}"
    mine = ["martlet nodes", "loadgen", "postgres"]
    rest = sorted(((t, c) for c, t in groups.items() if c not in mine and t > 0), reverse=True)[:3]
    other = ", ".join(f"{c} {pct(t)} %" for t, c in rest) or "-"
    print(f"| {label} | {secs:.0f} | {pct(busy)} | {pct(d[0])} | {pct(d[1])} | {pct(d[2])} | {pct(d[6])} | "
          + " | ".join(pct(groups.get(c, 0)) for c in mine) + f" | {other} | {probes / secs:.0f} |")

first, last = "quiet-empty-start", "paper-held-end"
print(f"\nKernel, from the first sample to the end: loopback packets dropped (softnet backlog full) "
      f"{softnet_dropped(last) - softnet_dropped(first)}, connections aborted on timeout "
      f"(TcpExtTCPAbortOnTimeout) {tcp_ext(last)['TCPAbortOnTimeout'] - tcp_ext(first)['TCPAbortOnTimeout']}; "
      f"net.core.netdev_max_backlog = {backlog_packets} for the run.")

print("\nEvery counter summed over the nodes at the end of the run (both paper runs and the idle logins):\n")
print("| metric | value |")
print("|---|---|")
for k, v in sorted(counters(last).items()):
    print(f"| `{k}` | {v} |")
PY
cat "$out"
log "written to $out"
