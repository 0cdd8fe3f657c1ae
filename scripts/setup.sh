#!/usr/bin/env bash
# Installs what a fresh machine lacks to build airssys: libclang (RocksDB's bindings)
# and the wasm32-wasip2 target (the example components). Safe to run again.
set -euo pipefail

need_apt=()
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
# libclang-cpp alone (present on some images) is not what bindgen loads.
if ! ldconfig -p 2>/dev/null | grep -qE 'libclang(-[0-9.]+)?\.so'; then need_apt+=(libclang-dev); fi
# libfaketime: deploy/docker/build.sh copies it into the image for the chaos tests' clock
# jump (one node only preloads it); nothing else needs it.
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null \
  || need_apt+=(libfaketime)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi
