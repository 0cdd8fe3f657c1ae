#!/usr/bin/env bash
# A chaos soak: N3 schedules on 3 nodes and N5 on 5 nodes (one seed each, consecutive from a
# random or given base), each with SOAK_FAULTS faults, going on past failures; then a table per
# fault kind (how many, how many in failing schedules, heal and first-reply p50/p99), per
# invariant (schedules violating it), and the failing seeds with the commands that rerun them.
# Usage: chaos-tests/soak.sh [N3] [N5]          (defaults 20 and 10)
# Env: SOAK_SEED (base seed; the 5-node schedules start at SOAK_SEED + 100000), SOAK_FAULTS
# (faults per schedule, default 6), SOAK_SETTLE (1, the default: wait for each heal before
# the next fault, so that every heal time is measured; 0: faults overlap heals, as in CI),
# SOAK_OUT (directory for the summaries and logs; default a new temporary one), SOAK_KINDS
# (fault kinds to inject in turn instead of the seeded choice: chaos.py --kinds).
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/airssys/target}"
N3="${1:-20}"
N5="${2:-10}"
FAULTS="${SOAK_FAULTS:-6}"
SEED="${SOAK_SEED:-$(( (RANDOM << 15 | RANDOM) % 1000000000 ))}"
OUT="${SOAK_OUT:-$(mktemp -d /tmp/airssys-soak.XXXXXX)}"
EXTRA=(--settle)
[ "${SOAK_SETTLE:-1}" = 0 ] && EXTRA=()
[ -n "${SOAK_KINDS:-}" ] && EXTRA+=(--kinds "$SOAK_KINDS")
mkdir -p "$OUT"
echo "soak: $N3 schedules on 3 nodes, $N5 on 5 nodes, $FAULTS faults each, base seed $SEED; output in $OUT"

status=0
run() { # nodes count seed
  local nodes="$1" count="$2" seed="$3"
  [ "$count" -gt 0 ] || return 0
  echo "== $count schedules on $nodes nodes from seed $seed (log: $OUT/n$nodes.log)"
  python3 chaos-tests/chaos.py --seed "$seed" --schedules "$count" --faults "$FAULTS" --nodes "$nodes" \
    "${EXTRA[@]}" --summary-json "$OUT/n$nodes.json" >"$OUT/n$nodes.log" 2>&1 || status=1
  grep -E 'VIOLATION|stopped:|all invariants hold' "$OUT/n$nodes.log" | sed 's/^/   /' | cut -c1-200
}
run 3 "$N3" "$SEED"
run 5 "$N5" "$((SEED + 100000))"

summaries=()
for f in "$OUT"/n3.json "$OUT"/n5.json; do [ -s "$f" ] && summaries+=("$f"); done
echo
if [ ${#summaries[@]} -eq 0 ]; then
  echo "no summaries written; see the logs in $OUT"
  exit 1
fi
python3 chaos-tests/chaos.py --aggregate "${summaries[@]}"
exit $status
