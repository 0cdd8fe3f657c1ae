#!/usr/bin/env bash
# Stops the compose cluster that up.sh N started and removes its containers, network,
# volumes and state (certificates, token).
# Usage: deploy/compose/down.sh [3|5]
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${1:-3}"
PROJECT="${AIRSSYS_COMPOSE_PROJECT:-airssys$N}"
STATE="deploy/compose/state-$PROJECT"
if [ -f "$STATE/docker-compose.yml" ]; then
  docker-compose -p "$PROJECT" -f "$STATE/docker-compose.yml" down -v --remove-orphans >/dev/null 2>&1 || true
fi
# The small tmpfs disk of the chaos tests, if up.sh mounted one.
for disk in "$STATE"/disk-*; do
  if mountpoint -q "$disk" 2>/dev/null; then umount "$disk" || umount -l "$disk"; fi
done
rm -rf "$STATE"
echo "cluster of $N stopped and removed"
