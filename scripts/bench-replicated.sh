#!/usr/bin/env bash
# Replicated commits against their baselines, in one run on this machine:
#   1. etcd 3.4 (Debian etcd-server), three members on loopback, 1/16/64 concurrent put
#      clients (the baseline program in $AIRSSYS_ETCD_BENCH; a team checkout keeps it
#      beside the project, which is the default);
#   2. airssys: three nodes, 1/16/64 busy counters, and raw RocksDB synced puts with as many
#      writer threads (cargo bench --bench replicated);
#   3. failover time: kill -9 of a counter's owner -> first reply (cargo bench --bench failover).
# Usage: scripts/bench-replicated.sh        (AIRSSYS_BENCH_SKIP_ETCD=1 to leave etcd out)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/airssys/target}"
scripts/build-examples.sh >/dev/null

etcd_bench="${AIRSSYS_ETCD_BENCH:-../shared/baselines/etcd-put-bench}"
if [ -z "${AIRSSYS_BENCH_SKIP_ETCD:-}" ]; then
  if [ ! -x "$etcd_bench/run.sh" ]; then
    echo "etcd baseline not found at $etcd_bench (set AIRSSYS_ETCD_BENCH, or AIRSSYS_BENCH_SKIP_ETCD=1)" >&2
    exit 2
  fi
  if ! command -v etcd >/dev/null || ! command -v protoc >/dev/null; then
    echo "== installing etcd-server and protobuf-compiler (Debian)"
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    $sudo_cmd apt-get install -y -qq etcd-server etcd-client protobuf-compiler >/dev/null
  fi
  echo "== etcd: 3 members on loopback, concurrent put clients, 10 s each"
  # shared/ may be read-only and run.sh builds into its own ./target: run a writable copy
  # in the user's cache, outside any cargo workspace (its build is reused next time).
  copy="${XDG_CACHE_HOME:-$HOME/.cache}/airssys/etcd-put-bench"
  mkdir -p "$copy"
  cp -r "$etcd_bench"/. "$copy"/ && chmod -R u+w "$copy"
  (cd "$copy" && unset CARGO_TARGET_DIR && CLIENTS="1 16 64" ./run.sh)
fi

echo "== airssys: replicated handler commits (and raw RocksDB synced puts)"
cargo bench -q -p airssys-node --bench replicated

echo "== airssys: failover time"
cargo bench -q -p airssys-node --bench failover
