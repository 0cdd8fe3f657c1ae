#!/usr/bin/env bash
# Builds the example components (examples/*) for wasm32-wasip2, in release.
#
# Usage: scripts/build-examples.sh            (from any directory)
# Output: $CARGO_TARGET_DIR/wasm32-wasip2/release/<name>.wasm
#         (CARGO_TARGET_DIR defaults to $HOME/.cache/airssys/target)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/airssys/target}"
target=wasm32-wasip2
examples=(counter counter-v1 echo crash ping account)

if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx "$target"; then
        rustup target add "$target"
    fi
fi

packages=()
for name in "${examples[@]}"; do
    packages+=(-p "airssys-example-$name")
done

cd "$root"
cargo build --release --target "$target" "${packages[@]}"

out="$CARGO_TARGET_DIR/$target/release"
echo "example components:"
for name in "${examples[@]}"; do
    wasm="$out/${name//-/_}.wasm"
    if [[ ! -f "$wasm" ]]; then
        echo "missing: $wasm" >&2
        exit 1
    fi
    printf '  %-10s %s (%s bytes)\n' "$name" "$wasm" "$(wc -c <"$wasm" | tr -d ' ')"
done
