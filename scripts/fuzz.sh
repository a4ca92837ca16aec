#!/usr/bin/env bash
# libFuzzer (cargo-fuzz) over martlet's parsers of untrusted bytes: fuzz/fuzz_targets/*.rs.
#
#   scripts/fuzz.sh smoke         # each target SMOKE_SECS (default 15) s from fuzz/corpus/<target>
#   scripts/fuzz.sh long [SECS]   # each target SECS (default 300) s; new inputs go to the
#                                 # uncommitted fuzz/corpus-long/<target> (run it under nice -n 19)
#   scripts/fuzz.sh merge         # into fuzz/corpus/<target>, the long run's inputs that add coverage
#                                 # (then keep it small: libFuzzer -set_cover_merge=1, as in tuning/results/2026-12-04-fuzz.md)
#
# Stable rustc with RUSTC_BOOTSTRAP=1 stands in for nightly (cargo-fuzz passes -Z flags).
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null; then
  cargo install cargo-fuzz --locked --quiet
fi
targets=$(cd fuzz && cargo fuzz list)
log=$(mktemp)
scratch=$(mktemp -d) # a smoke run's new inputs: the committed corpus stays as it is
trap 'rm -rf "$log" "$scratch"' EXIT

# target seconds corpus-dir...: libFuzzer's summary lines; the whole log when it fails.
run() {
  local t=$1 secs=$2 status=0
  shift 2
  local dict=() && [ -f fuzz/dict/"$t".dict ] && dict=(-dict=fuzz/dict/"$t".dict)
  cargo fuzz run "$t" "$@" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "${dict[@]}" >"$log" 2>&1 || status=$?
  if [ $status -ne 0 ]; then
    tail -60 "$log"
    return $status
  fi
  grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|martlet-fuzz)' "$log" || true
}

case ${1:-smoke} in
  smoke)
    for t in $targets; do
      echo "== fuzz $t (${SMOKE_SECS:-15} s)"
      mkdir -p "$scratch/$t"
      run "$t" "${SMOKE_SECS:-15}" "$scratch/$t" fuzz/corpus/"$t"
    done
    ;;
  long)
    for t in $targets; do
      echo "== fuzz $t (${2:-300} s)"
      mkdir -p fuzz/corpus-long/"$t"
      run "$t" "${2:-300}" fuzz/corpus-long/"$t" fuzz/corpus/"$t"
    done
    ;;
  merge)
    for t in $targets; do
      cargo fuzz run "$t" fuzz/corpus/"$t" fuzz/corpus-long/"$t" -- -merge=1 >"$log" 2>&1 || { tail -30 "$log"; exit 1; }
      grep -E '^MERGE-OUTER: [0-9]+ new files' "$log" || true
    done
    ;;
  *) echo "usage: $0 smoke | long [SECS] | merge" >&2; exit 2 ;;
esac
