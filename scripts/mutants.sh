#!/usr/bin/env bash
# The mutation score of chatsim-system, judged by the swarm (sim/chatsim/tests/mutant_swarm.rs;
# what is mutated is in .cargo/mutants.toml). Results go to mutants.out/ beside the tree;
# reports/mutants/README.md says what the last measured sample found.
#
# Usage: scripts/mutants.sh [SHARD] [more cargo-mutants options]
#   scripts/mutants.sh 0/4            the committed sample (round-robin: every 4th mutant)
#   scripts/mutants.sh 1/4 --in-place a CI matrix job runs k/4 for k in 0..3
#
# A mutant's rebuild (chatsim-system and everything above it) dominates its time: about a
# minute on two cores, so a quarter of the ~1,130 mutants is most of a working day. One job (the
# default) leaves a core free; the baseline is skipped because CI runs the swarm on the clean tree.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || {
  echo "cargo-mutants is not installed: cargo install cargo-mutants --locked" >&2
  exit 2
}
shard=${1:-0/4}
shift || true
# Build the judge once on the clean tree first: the first mutant's build is then incremental
# like every other, so the build timeout measures a mutant, not a cold cache.
cargo test --package chatsim --test mutant_swarm --no-run --locked
exec cargo mutants --package chatsim-system --shard "$shard" --sharding round-robin \
  --baseline skip --timeout 240 --build-timeout 900 "$@"
