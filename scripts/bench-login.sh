#!/usr/bin/env bash
# How many round trips a (re)connecting mobile client needs to a usable session, and how
# long that takes at a mobile RTT, recorded in tuning/results/<date>-login-rtt.md.
#   scripts/bench-login.sh [RTT_MS]          (default 100)
#   MARTLET_BIN=/path/to/martlet scripts/bench-login.sh     (prebuilt: nothing is built)
# One release martlet on loopback (scripts/lib/bench-node.sh: embedded storage, a few
# accounts, STARTTLS offered, XEP-0368 Direct TLS on too), and benches/latency_proxy.py in
# front of it adding RTT_MS (half each way, plus one RTT for the TCP handshake that
# loopback skips); the proxy also counts round trips on the bytes. Then, N times each
# (BENCH_LOGINS, default 10), one client at a time, timed inside the client process:
#   1. legacy: slixmpp, STARTTLS, RFC 6120 SASL SCRAM, bind, XEP-0198 enable (resume)
#      — connect() to `sm_enabled` (benches/login/legacy.py);
#   2. SASL2 first login with @xmpp/client: SCRAM-SHA-1 + Bind 2 with SM inline + FAST
#      token request — start() to "online" (benches/login/login.mjs, as for 3 and 4);
#   3. FAST token login + Bind 2, a new client instance with the token from 2;
#   4. FAST + resume: a logged-in client's socket destroyed, its reconnect (delay 0) back
#      with the token and <resume/> — "reconnecting" to "resumed"; again over Direct TLS.
# The same logins then run straight to the server (RTT 0: what the CPU costs).
# Needs .venv with slixmpp and tests/integration/js's npm packages (scripts/test.sh sets
# both up). Every wait is bounded (each login 30 s); everything started here is stopped
# on exit. About a minute at 100 ms.
set -euo pipefail
cd "$(dirname "$0")/.."
rtt=${1:-100}
logins=${BENCH_LOGINS:-10}
port=${BENCH_PORT:-25240}  # below the ephemeral ports (32768+), which other runs' sockets may hold
tls_port=$((port + 1)) proxy_port=$((port + 2)) proxy_tls_port=$((port + 3))
python=${PYTHON:-.venv/bin/python}
run_secs_max=600

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
[ -x "$python" ] && "$python" -c 'import slixmpp' 2>/dev/null || { log "no slixmpp in $python (scripts/test.sh makes .venv)"; exit 1; }
[ -d tests/integration/js/node_modules/@xmpp/client ] || { log "run (cd tests/integration/js && npm ci) first"; exit 1; }

. scripts/lib/bench-node.sh
start_bench_node "$port" 3 "$tls_port"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; kill $server_pid 2>/dev/null || true; rm -rf "$work"' EXIT
ca=$work/data/dev-cert.pem

proxy() {  # LISTEN_PORT UPSTREAM_PORT
  "$python" benches/latency_proxy.py --listen "127.0.0.1:$1" --upstream "127.0.0.1:$2" --rtt-ms "$rtt" \
    --log "$work/proxy.log" 2>>"$work/proxy.err" &
  pids+=($!)
}
proxy "$proxy_port" "$port"
proxy "$proxy_tls_port" "$tls_port"
sleep 0.5

# Each client run has a time limit of its own; the whole script stays under run_secs_max.
client() { timeout "$((run_secs_max / 8))" nice "$@"; }
# round C2S_PORT DIRECT_TLS_PORT OUT: the five kinds of login, reports appended to OUT.
round() {
  client "$python" benches/login/legacy.py "$1" user1 pw "$ca" "$logins" >>"$3"
  NODE_EXTRA_CA_CERTS=$ca client node benches/login/login.mjs "xmpp://127.0.0.1:$1" user2 pw "$logins" sasl2,fast,resume >>"$3"
  NODE_EXTRA_CA_CERTS=$ca client node benches/login/login.mjs "xmpps://127.0.0.1:$2" user3 pw "$logins" resume \
    | sed 's/"method":"resume"/"method":"resume-directtls"/' >>"$3"
}
log "RTT $rtt ms through the proxy, $logins logins each"
round "$proxy_port" "$proxy_tls_port" "$work/rtt.jsonl"
log "RTT 0: straight to the server"
round "$port" "$tls_port" "$work/direct.jsonl"

out="tuning/results/$(date -u +%Y-%m-%d)-login-rtt.md"
{
  echo "# martlet, mobile login: round trips and time to a usable session at RTT $rtt ms — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- commit: \`$(git rev-parse --short HEAD)\`$(git diff --quiet || echo ' (with uncommitted changes)')"
  echo "- machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r); loopback, clients on the same cores"
  echo "- server: martlet release build (\`${MARTLET_BIN:-target/release/martlet}\`), STARTTLS (offered, not required; TLS with its self-signed dev certificate) and XEP-0368 Direct TLS, embedded storage, defaults otherwise (SCRAM 4096 iterations, FAST on)"
  echo "- clients: slixmpp $("$python" -c 'import slixmpp; print(slixmpp.__version__)'), @xmpp/client $(node -p 'require("./tests/integration/js/node_modules/@xmpp/client/package.json").version'), node $(node --version), Python $("$python" -c 'import platform; print(platform.python_version())'); one login at a time, $logins of each, timed inside the client (connect/start or reconnect to usable)"
  echo "- network: benches/latency_proxy.py, $rtt ms RTT ($(awk "BEGIN{print $rtt/2}") ms each way, per chunk, order kept) plus one RTT before a new connection's first client bytes (the TCP handshake); RTT 0 = straight to the server, no proxy"
  echo "- command: \`${MARTLET_BIN:+MARTLET_BIN=$MARTLET_BIN }scripts/bench-login.sh $rtt\`"
  echo
  "$python" benches/login/summarize.py "$rtt" "$work/proxy.log" "$work/rtt.jsonl" "$work/direct.jsonl"
  echo
  echo "Round trips are counted by the proxy on the bytes (a client burst then a server burst), up to the moment the client was usable; they include STARTTLS and the TLS handshake but not the TCP handshake, which the time includes (so ms/RTT ≈ round trips + 1)."
  echo
  echo '```'
  for f in rtt direct; do sed "s/^/$f: /" "$work/$f.jsonl"; done
  echo '```'
} >"$out"
cat "$out"
if [ -s "$work/proxy.err" ] && grep -qv '^latency_proxy: 127' "$work/proxy.err"; then
  log "proxy errors:"; cat "$work/proxy.err" >&2
fi
