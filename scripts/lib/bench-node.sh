# Sourced by the single-node benches (run from the repository root):
#   start_bench_node PORT ACCOUNTS [DIRECT_TLS_PORT]
# builds martlet and loadgen (release), starts one martlet on 127.0.0.1:PORT (plain TCP +
# PLAIN, STARTTLS offered but not required, embedded storage in a temporary directory with
# its self-signed dev-cert.pem, other settings at their defaults, the per-IP limits lifted
# for the load generator) with accounts user1..userACCOUNTS (password pw), and stops it on
# exit. With DIRECT_TLS_PORT it also takes XEP-0368 Direct TLS there. Sets $work (the
# temporary directory) and $server_pid.
# MARTLET_BIN: a prebuilt martlet to run instead (then nothing is built, and lg needs a
# loadgen built before). BENCH_CORES: `cores` for the node (default: one per CPU);
# BENCH_PIN: a CPU list the server is pinned to (`taskset -c`). BENCH_METRICS_PORT: serve
# the Prometheus metrics on 127.0.0.1 at that port. BENCH_HTTP_PORT: the HTTP listener
# (WebSocket, BOSH, uploads) on 127.0.0.1 at that port, counted as behind a TLS proxy so
# SASL PLAIN is offered there as on the TCP port. BENCH_CACHE_BYTES: `[storage] cache_bytes_max`
# (redb's page cache, which a login fills with its account's pages). BENCH_ARCHIVE_OFF=1: no
# XEP-0313 archive (as compare.sh runs every server), so a message costs its routing alone.
martlet_bin=${MARTLET_BIN:-target/release/martlet}

start_bench_node() {
  local port=$1 accounts=$2 direct_tls=${3:-}
  work=$(mktemp -d)
  trap 'kill $server_pid 2>/dev/null || true; rm -rf "$work"' EXIT
  [ -n "${MARTLET_BIN:-}" ] || cargo build --release --quiet -p martlet -p loadgen
  cat > "$work/martlet.toml" <<TOML
domain = "localhost"
${BENCH_CORES:+cores = $BENCH_CORES}
[c2s]
listen = "127.0.0.1:$port"
require_tls = false
plain_without_tls = true
[c2s_direct_tls]
listen = "${direct_tls:+127.0.0.1:$direct_tls}"
[storage]
path = "$work/data"
${BENCH_CACHE_BYTES:+cache_bytes_max = $BENCH_CACHE_BYTES}
${BENCH_METRICS_PORT:+[metrics]
listen = \"127.0.0.1:$BENCH_METRICS_PORT\"}
${BENCH_HTTP_PORT:+[http]
listen = \"127.0.0.1:$BENCH_HTTP_PORT\"
behind_tls_proxy = true
[upload]
public_url = \"http://127.0.0.1:$BENCH_HTTP_PORT\"}
[limits]
connections_per_ip_max = 1000000
auth_failures_per_ip_per_minute = 1000000
${BENCH_ARCHIVE_OFF:+[archive]
enabled = false}
TOML
  "$martlet_bin" --config "$work/martlet.toml" user bulk-add --prefix user --count "$accounts" --password pw >/dev/null
  ${BENCH_PIN:+taskset -c "$BENCH_PIN"} "$martlet_bin" serve --config "$work/martlet.toml" >"$work/server.log" 2>&1 &
  server_pid=$!
  sleep 1
  if ! kill -0 "$server_pid" 2>/dev/null; then
    cat "$work/server.log" >&2
    exit 1
  fi
}

# Waits (at most 8 minutes) until the server holds N open files: N sessions logged in.
wait_for_sessions() {
  for _ in $(seq 240); do
    [ "$(ls /proc/$server_pid/fd | wc -l)" -ge "$1" ] && return
    sleep 2
  done
}

lg() { target/release/loadgen --server "127.0.0.1:$port" "$@"; }
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
