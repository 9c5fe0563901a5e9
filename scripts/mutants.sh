#!/usr/bin/env bash
# The mutation score of chatsim-system, judged by the swarm (sim/chatsim/tests/mutant_swarm.rs;
# what is mutated is in .cargo/mutants.toml). Results go to mutants.out/ beside the tree;
# reports/mutants/README.md says what the last measured sample found.
#
# Usage: scripts/mutants.sh [SHARD] [more cargo-mutants options]
#   scripts/mutants.sh 0/5            the committed sample (round-robin: every 5th mutant)
#   scripts/mutants.sh 1/5 --in-place a CI matrix job runs k/5 for k in 0..4
#   scripts/mutants.sh all --re "$(scripts/mutants-names.py OUT/mutants.out/missed.txt)" \
#       --output OUT/rejudged         a sample's survivors, judged by this commit's swarm
#
# A mutant costs about 25 s on an idle two-core machine (an incremental rebuild of chatsim-system
# and everything above it, then the swarm) and a minute on a shared one, so a fifth of the ~1,150
# mutants takes two to four hours. One job (the default); the baseline is skipped because CI runs
# the swarm on the clean tree.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || {
  echo "cargo-mutants is not installed: cargo install cargo-mutants --locked" >&2
  exit 2
}
# cargo-mutants copies the working tree, uncommitted changes and all: a mutant left in place by
# an interrupted --in-place run would sit under every mutant of the sample (it happened: a
# group_open that accepted anything broke every group scenario, and 149 mutants in a row
# were "caught"). Refuse a tree whose system/ differs from its commit.
if ! git diff --quiet HEAD -- system/; then
  echo "system/ has uncommitted changes (a mutant left by an interrupted run?):" >&2
  git diff --stat HEAD -- system/ >&2
  echo "commit or discard them (git checkout -- system/) first" >&2
  exit 2
fi
shard=${1:-0/5}
shift || true
# Build the judge once on the clean tree first: the first mutant's build is then incremental
# like every other, so the build timeout measures a mutant, not a cold cache.
cargo test --package chatsim --test mutant_swarm --no-run --locked
if [ "$shard" = all ]; then
  sharding=()
else
  sharding=(--shard "$shard" --sharding round-robin)
fi
exec cargo mutants --package chatsim-system "${sharding[@]}" \
  --baseline skip --timeout 240 --build-timeout 900 "$@"
