#!/usr/bin/env bash
# One million authenticated idle sessions on this box (issue 13), then the paper scenario
# across them: scripts/bench-cluster-scale.sh with 53 single-core nodes (a process may hold
# 20,000 open files here, so 1,000,000 sessions need at least 52 processes, and one more
# leaves room for the paper users, mesh peers and listeners) and as many load processes.
#
#   scripts/bench-million.sh                        # builds, then runs (about 30 min)
#   BIN=/tmp/bin BIN_COMMIT=abc1234 scripts/bench-million.sh
#
# Needs root (it raises net.core.netdev_max_backlog for the run) and about 20 GiB of free
# memory; the fill stops, saying how far it got, if the host's MemAvailable runs low.
# Bench-only settings are those of bench-cluster-scale.sh, named in the results file.
# Writes tuning/results/<date>-million.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
nodes=53
sessions=1000000
active_users=2000
messages_per_user=30
RESULTS_NAME=million exec scripts/bench-cluster-scale.sh "$nodes" "$sessions" "$active_users" "$messages_per_user"
