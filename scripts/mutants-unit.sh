#!/usr/bin/env bash
# Stage two of the mutation score: the mutants the swarm missed (scripts/mutants.sh), judged
# again by chatsim-system's unit tests (.cargo/mutants-unit.toml). A mutant both miss is a
# survivor of the project's tests; reports/mutants/ lists each with what kills it or why it
# is equivalent.
#
# Usage: scripts/mutants-unit.sh SWARM_OUTPUT_DIR [--loose] [more cargo-mutants options]
#   scripts/mutants-unit.sh /tmp/mutants-run     reads /tmp/mutants-run/mutants.out/missed.txt,
#                                                writes /tmp/mutants-run/unit/mutants.out/
# The survivors are selected by their exact names (line and column): system/src must be where
# stage one saw it. --loose selects them by file, function and mutation only, for a tree edited
# since (scripts/mutants-names.py).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: scripts/mutants-unit.sh SWARM_OUTPUT_DIR [cargo-mutants options]" >&2
  exit 2
fi
out=$1
shift
names=(--exact)
if [ "${1:-}" = --loose ]; then
  names=()
  shift
fi
missed=$out/mutants.out/missed.txt
if [ ! -f "$missed" ]; then
  echo "$missed: no such file (run scripts/mutants.sh with --output $out first)" >&2
  exit 2
fi
if [ ! -s "$missed" ]; then
  echo "$missed is empty: the swarm caught every mutant, nothing for stage two"
  exit 0
fi
if ! git diff --quiet HEAD -- system/; then
  echo "system/ has uncommitted changes (a mutant left by an interrupted run?):" >&2
  git diff --stat HEAD -- system/ >&2
  exit 2
fi
re=$(scripts/mutants-names.py "${names[@]}" "$missed")
cargo test --package chatsim-system --no-run --locked
exec cargo mutants --config .cargo/mutants-unit.toml --package chatsim-system --re "$re" \
  --baseline skip --timeout 240 --build-timeout 900 --output "$out/unit" "$@"
