#!/usr/bin/env bash
# XEP-0363 throughput and memory on one node (issue 12):
#   scripts/bench-upload.sh [SIZE_BYTES:COUNT...]   # default: 1000000:100 100000000:5
# A fresh martlet (defaults: both cores, embedded storage and the upload store on this
# disk, file_bytes_max 100 MiB) with its HTTP listener; scripts/bench-upload.py asks the
# slots over XMPP, PUTs the files one after the other, GETs them back, and prints MB/s each
# way, the server's CPU per MB, and its RSS before, at its highest while streaming, and
# after. Needs .venv with slixmpp (scripts/test.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- 1000000:100 100000000:5
port=${BENCH_PORT:-26240}   # below the ephemeral range; HTTP on BENCH_HTTP_PORT, else +1
export BENCH_HTTP_PORT=${BENCH_HTTP_PORT:-$((port + 1))}
. scripts/lib/bench-node.sh
start_bench_node "$port" 1
echo "commit $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo
.venv/bin/python scripts/bench-upload.py "$port" "$server_pid" "$work/data/dev-cert.pem" "$@"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
