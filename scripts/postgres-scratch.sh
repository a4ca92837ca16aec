#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and local cluster runs, separate from any system
# cluster: installs Debian's postgresql if missing, makes a data directory, starts it on
# 127.0.0.1:PORT (default 25432) as the postgres user, creates role (may create databases,
# for the tests) and database `martlet` (password `martlet`), and prints the connection URL on stdout.
# TLS is on: a certificate for 127.0.0.1 signed by a CA of its own, DIR/ca.crt.
#
#   scripts/postgres-scratch.sh start [DIR] [PORT]   # DIR default /tmp/martlet-postgres
#   scripts/postgres-scratch.sh stop  [DIR]
#
# Safe to re-run: an instance already running in DIR is reused. Every wait is bounded.
set -euo pipefail

action=${1:-start}
dir=${2:-/tmp/martlet-postgres}
port=${3:-25432}

log() { printf '%s\n' "$*" >&2; }

bindir() {
  local d
  d=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -1)")
  [ "$d" != . ] || { log "no PostgreSQL server binaries under /usr/lib/postgresql"; exit 1; }
  echo "$d"
}

as_postgres() { setpriv --reuid postgres --regid postgres --init-groups -- "$@"; }

start() {
  # postgresql-client alone also has /usr/lib/postgresql/*/bin (psql); the server has initdb.
  if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || ! id postgres >/dev/null 2>&1; then
    log "installing postgresql (Debian)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local bin
  bin=$(bindir)
  mkdir -p "$dir"
  chown postgres: "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    as_postgres "$bin/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  fi
  if [ ! -f "$dir/ca.crt" ]; then
    # A CA of its own (DIR/ca.crt) and a certificate for 127.0.0.1 signed by it, so the
    # tests can connect with TLS verified (`postgres_tls = "verify-full"`); plain stays allowed.
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=martlet scratch CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$dir/server.ext"
    openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 3650 \
      -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
    chown postgres: "$dir/server.key" "$dir/server.crt"
    chmod 600 "$dir/server.key"
  fi
  if ! as_postgres "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    # Sockets in DIR too, so nothing in /var/run is needed; fsync stays on: the tests
    # restart servers and expect what they stored to be there.
    as_postgres "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 30 \
      -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=200 -c ssl=on" \
      start >/dev/null
  fi
  local psql=("$bin/psql" -h "$dir" -p "$port" -U postgres -v ON_ERROR_STOP=1 -qAt)
  if [ "$(as_postgres "${psql[@]}" -c "select 1 from pg_roles where rolname = 'martlet'")" != 1 ]; then
    # CREATEDB: the storage tests make a database per test.
    as_postgres "${psql[@]}" -c "create role martlet login createdb password 'martlet'"
  fi
  if [ "$(as_postgres "${psql[@]}" -c "select 1 from pg_database where datname = 'martlet'")" != 1 ]; then
    as_postgres "${psql[@]}" -c "create database martlet owner martlet"
  fi
  echo "postgresql://martlet:martlet@127.0.0.1:$port/martlet"
}

stop() {
  [ -f "$dir/PG_VERSION" ] || return 0
  as_postgres "$(bindir)/pg_ctl" -D "$dir" -m fast -w -t 30 stop >/dev/null 2>&1 || true
}

case $action in
  start) start ;;
  stop) stop ;;
  *) log "usage: $0 start|stop [DIR] [PORT]"; exit 2 ;;
esac
