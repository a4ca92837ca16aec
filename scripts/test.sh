#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine: installs what the integration tests
# need (go-sendxmpp and chromium from Debian, slixmpp + pytest in .venv, @xmpp/client,
# Converse.js and puppeteer-core from npm, a scratch PostgreSQL server from Debian's
# postgresql on 127.0.0.1:25432), builds
# the workspace in release mode, runs the Rust tests, then the integration suite that
# drives the real binary with those independent clients.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# Debian packages: go-sendxmpp and mcabber (clients), tmux, node and npm (for @xmpp/client), the venv module.
missing=()
command -v go-sendxmpp >/dev/null || missing+=(go-sendxmpp)
command -v npm >/dev/null || missing+=(nodejs npm)
command -v mcabber >/dev/null || missing+=(mcabber)   # loudmouth: the strictest reader of <stream:features>
command -v tmux >/dev/null || missing+=(tmux)         # drives mcabber's terminal UI
command -v chromium >/dev/null || missing+=(chromium) # Converse.js, headless, over the WebSocket endpoint
command -v ip >/dev/null || missing+=(iproute2)      # network namespaces for test_partition.py
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/pytest ] || ! .venv/bin/python -c 'import slixmpp' 2>/dev/null; then
  log "python venv with slixmpp and pytest"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check slixmpp==1.17.0 pytest==8.3.5 pytest-timeout==2.3.1
fi

log "npm packages: @xmpp/client, Converse.js and puppeteer-core (which drives the system chromium, downloads none)"
(cd tests/integration/js && npm ci --silent --no-audit --no-fund)

log "PostgreSQL for the postgres storage backend's tests (scripts/postgres-scratch.sh)"
MARTLET_TEST_POSTGRES_URL=$(scripts/postgres-scratch.sh start)
export MARTLET_TEST_POSTGRES_URL
export MARTLET_TEST_POSTGRES_CA=/tmp/martlet-postgres/ca.crt   # its TLS certificate's CA

log "cargo build --release --workspace, and the test-hooks variant (deliberate panics) for the containment tests"
cargo build --release --workspace --quiet --features martlet/test-hooks
cp target/release/martlet target/release/martlet-test-hooks
cargo build --release --workspace --quiet # the binary users get, back in target/release/martlet

log "cargo test --workspace --release (with the tests that need PostgreSQL)"
cargo test --workspace --release --quiet -- --include-ignored

log "fuzz smoke: each target from its corpus (scripts/fuzz.sh; installs cargo-fuzz)"
scripts/fuzz.sh smoke

log "integration suite (pytest)"
.venv/bin/pytest tests/integration -q -p no:cacheprovider --timeout 120
