#!/usr/bin/env bash
# Trace hashes of every judged scenario on both engines, one line each, for checking that a
# refactor moved no trace: run it with the binary before and after, then diff the two outputs.
#   scripts/trace-hashes.sh [BINARY] [SEEDS]      (defaults: target/release/chatsim, "1 2")
# Then every bug of the zoo on its scenario. The big worlds (bench-reference, scale-100k) are
# left out: minutes each, and they drive the same code as the small ones. Exit code 1 (an
# invariant broken) is a verdict; anything else is printed as "failed".
set -euo pipefail
cd "$(dirname "$0")/.."

# One run's hash and broken invariants: `judge ARGS...`.
judge() {
  local out code=0
  out=$("$bin" run "$@" --json --no-report 2>/dev/null) || code=$?
  if [ "$code" -gt 1 ]; then
    echo "failed (exit $code)"
    return
  fi
  python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["trace_hash"], "broken:" + ",".join(i["name"] for i in j["invariants"] if not i["holds"]))' <<<"$out"
}
bin=${1:-target/release/chatsim}
seeds=${2:-1 2}
for f in scenarios/*.toml; do
  name=$(basename "$f" .toml)
  case "$name" in bench-reference|scale-100k) continue ;; esac
  for engine in madsim turmoil; do
    for seed in $seeds; do
      line=$(judge "$f" --seed "$seed" --engine "$engine")
      echo "$name $engine $seed $line"
    done
  done
done
# Each bug of the zoo on its own scenario (the column `chatsim bugs` names), same seeds: the
# failing traces must not move either, and a machine's assertion must not fire under a bug.
"$bin" bugs | awk 'NR>1 && NF>=3 && $1 != "A" {print $1, $3}' | while read -r bug scenario; do
  for seed in $seeds; do
    line=$(judge "scenarios/$scenario.toml" --seed "$seed" --bug "$bug")
    echo "bug $bug $scenario $seed $line"
  done
done
