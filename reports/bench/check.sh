#!/usr/bin/env bash
# The model checker's speed, before and after: every model of `chatsim check` run by two
# binaries in turn (model by model, so drift on a shared machine hits both alike), with the
# unique states, seconds and unique states a second of each, and the ratio. BEFORE is a
# commit to build the other binary from (default: the last one before the search was sped up).
# Builds of one protocol must find equal counts (asserted with SAME_PROTOCOL=1); the frame cuts
# of 2026-12-06 changed the protocol, so against an older BEFORE the counts differ and the
# states a second compare searches of different sizes.
#   usage: [SAME_PROTOCOL=1] reports/bench/check.sh [BEFORE]        (THREADS=2 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
before=${1:-3f937f5}
threads=${THREADS:-2}
cargo build --release -q -p chatsim
cp target/release/chatsim /tmp/chatsim-check-after
work=$(mktemp -d)
git worktree add -q --detach "$work" "$before"
trap 'git worktree remove --force "$work"' EXIT
CARGO_TARGET_DIR="$PWD/target/check-before" cargo build --release -q -p chatsim --manifest-path "$work/Cargo.toml"
cp target/check-before/release/chatsim /tmp/chatsim-check-before
printf '%-10s %10s %12s %12s %12s %12s %7s\n' model states before_s after_s before/s after/s ratio
for model in direct read reconnect group failover handover adversary; do
  row=()
  for bin in before after; do
    out=$(/tmp/chatsim-check-$bin check --model "$model" --threads "$threads" --json 2>/dev/null | tail -1)
    row+=("$out")
  done
  python3 - "$model" "${row[@]}" <<'PY'
import json, sys
model, b, a = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
import os
if os.environ.get("SAME_PROTOCOL") == "1":
    assert b["unique_states"] == a["unique_states"], (model, b["unique_states"], a["unique_states"])
rb, ra = b["unique_states"] / b["seconds"], a["unique_states"] / a["seconds"]
states = f'{a["unique_states"]:,}' if a["unique_states"] == b["unique_states"] else f'{b["unique_states"]:,}->{a["unique_states"]:,}'
print(f'{model:<10} {states:>10} {b["seconds"]:>12.2f} {a["seconds"]:>12.2f} {rb:>12,.0f} {ra:>12,.0f} {ra / rb:>6.1f}x')
PY
done
