#!/usr/bin/env bash
# Runs martlet for development: release build, embedded storage in ./martlet-data, a
# self-signed certificate made on first start, and two demo accounts (alice, bob; password
# "demo"), on loopback only (scripts/dev-server.toml: XMPP on 5222/5223, web clients on
# 5280 and 5281 over TLS). Extra arguments go to `martlet serve`
# instead of that config (e.g. --config FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin martlet
bin=target/release/martlet
if [ $# -eq 0 ]; then
  set -- --config scripts/dev-server.toml
fi
for user in alice bob; do
  # `user add` refuses an existing account; that is fine on the second run.
  "$bin" "$@" user add "$user@localhost" demo 2>/dev/null || true
done
echo "demo accounts: alice@localhost / bob@localhost, password 'demo'"
[ "$*" = "--config scripts/dev-server.toml" ] &&
  echo "web clients: ws://localhost:5280/xmpp-websocket, wss://localhost:5281/xmpp-websocket, BOSH at /http-bind"
exec "$bin" "$@" serve
