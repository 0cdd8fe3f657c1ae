#!/usr/bin/env bash
# The whole test suite: set-up, example components, formatting, lints, every test.
# Usage: scripts/test.sh            (from any directory)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/airssys/target}"

scripts/setup.sh
scripts/build-examples.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (host crates)"
cargo clippy --release --all-targets -- -D warnings
echo "== cargo clippy (sdk and example components, wasm32-wasip2)"
cargo clippy --release --target wasm32-wasip2 \
  -p airssys-sdk -p airssys-example-counter -p airssys-example-echo \
  -p airssys-example-crash -p airssys-example-ping -p airssys-example-account -- -D warnings
echo "== cargo test"
cargo test --release
