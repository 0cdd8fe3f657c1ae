#!/usr/bin/env bash
# Builds the airssys container image without pulling anything: FROM scratch, plus the
# release binary and the shared libraries it links (found with ldd), and libfaketime when
# the host has it (used only by the chaos tests' clock jump, on one node).
# Usage: deploy/docker/build.sh [TAG]        (default tag: airssys:dev)
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/airssys/target}"
TAG="${1:-airssys:dev}"

scripts/setup.sh >/dev/null
echo "== building the airssys binary (release)"
cargo build --release -p airssys-node --bin airssys
BIN="$CARGO_TARGET_DIR/release/airssys"

CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT
ROOT="$CTX/rootfs"
mkdir -p "$ROOT/data" "$ROOT/tmp" "$ROOT/etc"
chmod 1777 "$ROOT/tmp"
cp "$BIN" "$ROOT/airssys"
# Every shared library the binary loads, at the same path, and the dynamic loader.
for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"
done
# libfaketime, when the host has it (scripts/setup.sh installs it), for the chaos tests'
# clock jump: inert unless a container sets LD_PRELOAD=/usr/lib/faketime/libfaketime.so.1.
FAKETIME_LIB="$(compgen -G '/usr/lib/*/faketime/libfaketime.so.1' | head -n 1 || true)"
if [ -n "$FAKETIME_LIB" ]; then
  mkdir -p "$ROOT/usr/lib/faketime"
  cp -L "$FAKETIME_LIB" "$ROOT/usr/lib/faketime/libfaketime.so.1"
  for lib in $(ldd "$FAKETIME_LIB" | grep -o '/[^ ]*'); do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
  done
fi
echo "airssys:x:10001:10001:airssys:/data:/airssys" >"$ROOT/etc/passwd"
echo "airssys:x:10001:" >"$ROOT/etc/group"
cp deploy/docker/Dockerfile.scratch "$CTX/Dockerfile"
echo "== docker build -t $TAG (FROM scratch, $(du -sh "$ROOT" | cut -f1))"
docker build -q -t "$TAG" "$CTX"
echo "built $TAG"
