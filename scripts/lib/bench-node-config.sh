# Sourced by the cluster benchmarks (bench-cluster.sh, bench-cluster-scale.sh,
# bench-mesh-idle.sh): the configuration their martlet nodes share.
#
# bench_node_config FILE CORES C2S_PORT METRICS_PORT DATA_DIR POSTGRES_URL [STORAGE_LINES [LIMITS_LINES]]
# writes FILE: plain TCP + SASL PLAIN on 127.0.0.1 (as load tools connect to every server
# under test), no Direct TLS, PostgreSQL storage (a cluster's nodes share it) and no per-IP
# limits (every client comes from 127.0.0.1). STORAGE_LINES and LIMITS_LINES are more
# `key = value` lines for those two tables; callers append tables of their own.
bench_node_config() {
  local file=$1 cores=$2 c2s=$3 metrics=$4 data=$5 url=$6 storage=${7:-} limits=${8:-}
  {
    cat <<TOML
cores = $cores
[c2s]
listen = "127.0.0.1:$c2s"
require_tls = false
plain_without_tls = true
[c2s_direct_tls]
listen = ""
[storage]
backend = "postgres"
postgres_url = "$url"
path = "$data"
TOML
    [ -z "$storage" ] || printf '%s\n' "$storage"
    cat <<TOML
[metrics]
listen = "127.0.0.1:$metrics"
[limits]
connections_per_ip_max = 1000000
auth_failures_per_ip_per_minute = 1000000
TOML
    [ -z "$limits" ] || printf '%s\n' "$limits"
  } >"$file"
}
