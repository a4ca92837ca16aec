#!/usr/bin/env bash
# Mobile-style cost of a martlet session, recorded in tuning/results/<date>-mobile.md.
#   scripts/bench-mobile.sh [HOLD_SECS]          (HOLD_SECS: idle hold, default 360)
# One release martlet on loopback (plain TCP + PLAIN, embedded storage, archive and limits
# at their defaults, so the server pings a silent session every 120 s), then benches/loadgen:
#   1. paper N=1000 x 30 messages at 1/s, XEP-0198 off, then on (same settings): delivery,
#      latency, and the bytes on the wire per delivered message, each direction;
#   2. idle: 200 sessions with XEP-0198 off and 200 with it on, held HOLD_SECS side by side
#      (two loadgen processes, each counting its own sockets): bytes per session, scaled
#      linearly to an idle hour. Sessions answer pings and ack requests and send nothing
#      else: loadgen sends no whitespace keepalives.
# About 2 + HOLD_SECS/60 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
hold=${1:-360}
port=${BENCH_PORT:-25223}  # below the ephemeral ports (32768+), which other runs' sockets may hold
. scripts/lib/bench-node.sh
start_bench_node "$port" 1400

paper=(--users 1000 paper --messages 30 --interval-ms 1000 --drain-secs 5)
lg --out "$work/paper-off.json" "${paper[@]}" >/dev/null
lg --sm --out "$work/paper-on.json" "${paper[@]}" >/dev/null
# Disjoint accounts, so the two sets do not replace each other's sessions.
lg --first 1001 --users 200 --out "$work/idle-off.json" connections --hold-secs "$hold" >/dev/null &
off_pid=$!
lg --sm --first 1201 --users 200 --out "$work/idle-on.json" connections --hold-secs "$hold" >/dev/null
wait $off_pid

out="tuning/results/$(date -u +%Y-%m-%d)-mobile.md"
{
  echo "# martlet, mobile-style session cost: XEP-0198 off vs on — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- commit: \`$(git rev-parse --short HEAD)\`$(git diff --quiet || echo ' (with uncommitted changes)')"
  echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r); loopback, load generator on the same cores"
  echo "- server: martlet release build, plain TCP + SASL PLAIN, embedded storage, archive and \`[limits]\` defaults (ping after 120 s of silence)"
  echo "- command: \`scripts/bench-mobile.sh $hold\`"
  echo "- bytes are counted by loadgen on its sockets above TCP (with \`--tls none\`, the XMPP bytes of the wire; TCP/IP headers not included)"
  echo
  echo "## Paper scenario, N=1000 x 30 messages at 1/s, 5 s drain"
  echo
  echo "| XEP-0198 | delivered/sent | p50 / p90 / p99 / p99.9 ms | bytes client→server per delivered | bytes server→client per delivered | total per delivered |"
  echo "|---|---|---|---|---|---|"
  for m in off on; do
    j="$work/paper-$m.json"
    echo "| $m | $(field "$j" delivered)/$(field "$j" sent) | $(field "$j" latency_p50_ms) / $(field "$j" latency_p90_ms) / $(field "$j" latency_p99_ms) / $(field "$j" latency_p999_ms) | $(field "$j" bytes_written_per_delivered) | $(field "$j" bytes_read_per_delivered) | $(field "$j" bytes_per_delivered) |"
  done
  echo
  echo "## Idle sessions, 200 per mode held ${hold} s side by side"
  echo
  echo "| XEP-0198 | sessions | bytes client→server in hold | bytes server→client in hold | bytes per session per idle hour (x 3600/${hold}) | login bytes per session (both ways) |"
  echo "|---|---|---|---|---|---|"
  for m in off on; do
    j="$work/idle-$m.json"
    login=$(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(round((r['bytes_read_total']+r['bytes_written_total']-r['hold_bytes_read']-r['hold_bytes_written'])/r['sessions']))" "$j")
    echo "| $m | $(field "$j" sessions) | $(field "$j" hold_bytes_written) | $(field "$j" hold_bytes_read) | $(field "$j" hold_bytes_per_session_hour) | $login |"
  done
  echo
  echo '```'
  for f in "$work"/paper-*.json "$work"/idle-*.json; do echo "$(basename "$f"): $(python3 -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1]))))" "$f")"; done
  echo '```'
} > "$out"
cat "$out"
