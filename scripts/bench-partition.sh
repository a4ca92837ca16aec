#!/usr/bin/env bash
# Issue 14's partition scenario at its full length, against one or more builds: three nodes
# in network namespaces of their own, two users per node each sending a chat to a random
# other user every 200 ms for 60 s, node 2 cut off from nodes 0 and 1 from 15 s to 35 s,
# then every user logging in again. Prints, per build: sent, delivered live once, only from
# offline storage at the later login, duplicated, lost, and the seconds from the heal until
# every node saw every other up. Needs root (namespaces) and a PostgreSQL
# ($MARTLET_TEST_POSTGRES_URL, as scripts/test.sh starts one).
#
#   scripts/bench-partition.sh [BINARY ...]     # default: target/release/martlet
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- target/release/martlet
: "${MARTLET_TEST_POSTGRES_URL:?start one with scripts/postgres-scratch.sh start}"
for binary in "$@"; do
    echo "== $binary"
    MARTLET_BINARY="$(realpath "$binary")" PARTITION_SECS=60 PARTITION_CUT_AT=15 PARTITION_CUT_SECS=20 \
        .venv/bin/pytest tests/integration/test_partition.py -k cut_off -q -s -p no:cacheprovider --timeout 300 \
        2>&1 | grep -E "^\{'sent'|passed|failed" || true
done
