#!/usr/bin/env bash
# The main job: builds airssys and the example components, starts a local 3-node cluster
# (processes on 127.0.0.1, mutual TLS from a fresh cluster CA), installs the examples and
# shows messages crossing nodes. Every node is stopped at the end (pass --keep to leave
# them running; stop them later with: kill $(cat <dir>/node*.pid)).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/airssys/target}"
KEEP=0; [ "${1:-}" = "--keep" ] && KEEP=1
BASE="${AIRSSYS_DEMO_PORT:-7070}"   # node N: admin BASE+10(N-1), QUIC one above

scripts/setup.sh
scripts/build-examples.sh
echo "== building airssys"
cargo build --release -p airssys-node --bin airssys

BIN="$CARGO_TARGET_DIR/release/airssys"
WASM="$CARGO_TARGET_DIR/wasm32-wasip2/release"
DIR="$(mktemp -d /tmp/airssys-demo.XXXXXX)"
export AIRSSYS_TOKEN="demo-$(date +%s)-$RANDOM"
admin() { echo "127.0.0.1:$((BASE + 10 * ($1 - 1)))"; }
peer() { echo "127.0.0.1:$((BASE + 10 * ($1 - 1) + 1))"; }

echo "== cluster CA and node certificates in $DIR"
"$BIN" cert ca --out "$DIR/ca" --name demo >/dev/null
for n in 1 2 3; do
  "$BIN" cert node --ca-dir "$DIR/ca" --node-id "$n" --host 127.0.0.1 --out "$DIR/tls$n" >/dev/null
done

PIDS=()
stop_nodes() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
[ $KEEP = 1 ] || trap stop_nodes EXIT

start_node() {
  local n=$1; shift
  "$BIN" node start --node-id "$n" --data-dir "$DIR/data$n" --admin "$(admin "$n")" \
    --peer "$(peer "$n")" --tls-dir "$DIR/tls$n" "$@" >"$DIR/node$n.log" 2>&1 &
  PIDS+=($!)
  echo $! >"$DIR/node$n.pid"
  echo "node $n: admin http://$(admin "$n"), QUIC $(peer "$n"), log $DIR/node$n.log"
}

wait_until() {  # wait_until DESCRIPTION COMMAND...
  local what=$1; shift
  for _ in $(seq 1 300); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "gave up waiting for $what; logs:"; tail -n 20 "$DIR"/node*.log; exit 1
}
voters() { "$BIN" cluster members --json --endpoint "http://$(admin 1)" | grep -Eo '"voter": *true' | wc -l; }
three_voters() { [ "$(voters)" = 3 ]; }

echo "== starting node 1 (bootstraps the cluster), then nodes 2 and 3 (join through node 1)"
start_node 1
wait_until "node 1 to lead" "$BIN" cluster status --endpoint "http://$(admin 1)"
start_node 2 --join "$(peer 1)"
start_node 3 --join "$(peer 1)"
wait_until "three voters" three_voters

# Replies are written raw (no newline added when stdout is not a terminal); add one.
on() { local n=$1; shift; echo "\$ airssys $* (via node $n)"; "$BIN" "$@" --endpoint "http://$(admin "$n")"; local rc=$?; echo; return $rc; }

on 1 cluster status

echo "== installing the examples (any node takes installs; the leader places them on the least-loaded node)"
on 1 component install echo "$WASM/echo.wasm"
on 3 component install counter "$WASM/counter.wasm"
on 2 component install ping "$WASM/ping.wasm"
on 1 component install alice "$WASM/account.wasm"
on 2 component install bob "$WASM/account.wasm"
on 3 component install crash "$WASM/crash.wasm" --deadline-ms 500
on 1 component list

echo "== requests through any node reach the component on its owner"
on 1 request counter inc
on 2 request counter inc
on 3 request counter get
on 3 request echo "hello from node 3"

echo "== component to component across nodes: ping asks counter, the reply comes back as a callback"
on 1 request ping "ping counter"
sleep 0.3
on 1 request ping last

echo "== a transfer is one transaction: alice withdraws and sends bob (another node) a durable deposit"
on 1 request alice "deposit 100"
on 1 request alice "transfer 30 bob"
sleep 0.3
echo "alice: $("$BIN" request alice balance --endpoint "http://$(admin 2)")   bob: $("$BIN" request bob balance --endpoint "http://$(admin 3)")"

echo "== an operator moves a component to another node"
on 2 component move echo --to 2
on 3 request echo "echo now runs on node 2"

echo "== failures stay contained"
on 2 request crash spin || true
on 2 request crash hello
on 1 cluster status

echo "== done. Logs: $DIR/node*.log"
if [ $KEEP = 1 ]; then
  echo "the nodes keep running (pids ${PIDS[*]}); stop them with: kill ${PIDS[*]}"
fi
