#!/usr/bin/env bash
# The main job: builds airssys and the example components, starts a node, installs the
# examples and shows messages flowing between them. The node is stopped at the end
# (pass --keep to leave it running; stop it later with: kill $(cat <data-dir>/node.pid)).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/airssys/target}"
KEEP=0; [ "${1:-}" = "--keep" ] && KEEP=1
PORT="${AIRSSYS_DEMO_PORT:-7070}"

scripts/setup.sh
scripts/build-examples.sh
echo "== building airssys"
cargo build --release -p airssys-node --bin airssys

BIN="$CARGO_TARGET_DIR/release/airssys"
WASM="$CARGO_TARGET_DIR/wasm32-wasip2/release"
DATA="$(mktemp -d /tmp/airssys-demo.XXXXXX)"
export AIRSSYS_ENDPOINT="http://127.0.0.1:$PORT"
export AIRSSYS_TOKEN="demo-$(date +%s)-$RANDOM"

echo "== starting a node (data in $DATA, admin API on $AIRSSYS_ENDPOINT)"
"$BIN" node start --data-dir "$DATA" --admin "127.0.0.1:$PORT" >"$DATA/node.log" 2>&1 &
NODE_PID=$!
echo "$NODE_PID" >"$DATA/node.pid"
stop_node() { kill "$NODE_PID" 2>/dev/null && wait "$NODE_PID" 2>/dev/null || true; }
[ $KEEP = 1 ] || trap stop_node EXIT

for _ in $(seq 1 100); do
  "$BIN" cluster status >/dev/null 2>&1 && break
  kill -0 "$NODE_PID" 2>/dev/null || { echo "the node exited:"; cat "$DATA/node.log"; exit 1; }
  sleep 0.1
done

# Replies are written raw (no newline added when stdout is not a terminal); add one.
run() { echo "\$ airssys $*"; "$BIN" "$@"; local rc=$?; echo; return $rc; }

echo "== installing the example components"
run component install counter "$WASM/counter.wasm"
run component install echo "$WASM/echo.wasm"
run component install ping "$WASM/ping.wasm"
run component install crash "$WASM/crash.wasm" --deadline-ms 500
run component install alice "$WASM/account.wasm"
run component install bob "$WASM/account.wasm"
run component list

echo "== requests and replies"
run request echo "hello, airssys"
run request counter inc
run request counter inc
run request counter get

echo "== component to component: ping asks counter, the reply comes back as a callback"
run request ping "ping counter"
sleep 0.3
run request ping last

echo "== a transfer is one transaction: alice withdraws and sends bob a durable deposit"
run request alice "deposit 100"
run request alice "transfer 30 bob"
sleep 0.3
echo "alice: $("$BIN" request alice balance)   bob: $("$BIN" request bob balance)"

echo "== failures stay contained"
run request crash spin || true
run request crash trap || true
run request crash hello
run component describe crash

echo "== done. Node log: $DATA/node.log"
if [ $KEEP = 1 ]; then
  echo "the node keeps running (pid $NODE_PID); stop it with: kill $NODE_PID"
fi
