#!/usr/bin/env bash
# Seed 001's experiment with the paper's own load tool, Tsung, against martlet on loopback:
#   scripts/bench-tsung.sh [USERS] [MESSAGES]      (defaults 200 and 10)
# USERS log in over plain TCP with SASL PLAIN (Tsung's jabber plugin; no TLS, as load tools
# meet every server here), bind, open a session, wait until all are online, then each sends
# MESSAGES chats at 1 msg/s to random online users. Tsung's traffic dump gives exact
# delivery and end-to-end latency (benches/tsung/report.py); Tsung's own xmpp_msg_latency
# undercounts. Prints the table and keeps Tsung's logs in $TSUNG_LOG_DIR (default: a temp
# dir, removed). Needs Debian's tsung (apt-get install tsung). The server is the one of
# scripts/lib/bench-node.sh (MARTLET_BIN: a prebuilt one instead of building).
set -euo pipefail
cd "$(dirname "$0")/.."
users=${1:-200} messages=${2:-10}
port=${BENCH_PORT:-25242}         # below the ephemeral range (32768+), apart from the other benches
login_secs=10                     # users arrive at USERS/login_secs a second, ...
arrival_secs=120                  # ... and Tsung may take this long to launch them on a busy box
settle_secs=60                    # slack for logins on a loaded box, and for the last messages
command -v tsung >/dev/null || { echo "tsung is not installed: apt-get install tsung" >&2; exit 1; }
. scripts/lib/bench-node.sh
start_bench_node "$port" "$users"
# Tsung logs user<id> in with password pw<id>, ids from 1 (bulk-add gave them all "pw").
for i in $(seq 1 "$users"); do
  "$martlet_bin" --config "$work/martlet.toml" user passwd "user$i@localhost" "pw$i" >/dev/null
done

load_secs=$((arrival_secs + messages + settle_secs))
sed -e "s/@USERS@/$users/g; s/@MAXUSERS@/$((users + 10))/; s/@PORT@/$port/; s/@MESSAGES@/$messages/" \
    -e "s/@LOAD_SECS@/$load_secs/; s/@ARRIVAL_SECS@/$arrival_secs/; s/@DUMPTRAFFIC@/true/" \
    -e "s/@ARRIVAL_RATE@/$(python3 -c "print(max(1, $users / $login_secs))")/" \
    benches/tsung/paper.xml > "$work/paper.xml"
log_dir=${TSUNG_LOG_DIR:-$work/tsung}  # $work goes when the script ends
mkdir -p "$log_dir"
# -n: no web dashboard. The whole run is bounded; Tsung stops itself at load_secs.
timeout $((load_secs + 60)) tsung -n -f "$work/paper.xml" -l "$log_dir" start >"$work/tsung.out" 2>&1 \
  || { cat "$work/tsung.out" >&2; exit 1; }
run_dir=$(ls -d "$log_dir"/*/ | tail -1)
echo "martlet $(git rev-parse --short HEAD), Tsung $(dpkg-query -W -f '${Version}' tsung 2>/dev/null || echo '?'), $users users x $messages messages at 1 msg/s, plain TCP + PLAIN, loopback"
python3 benches/tsung/report.py "$run_dir"
