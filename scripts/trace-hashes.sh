#!/usr/bin/env bash
# Trace hashes of every judged scenario on both engines, one line each, for checking that a
# refactor moved no trace: run it with the binary before and after, then diff the two outputs.
#   scripts/trace-hashes.sh [BINARY] [SEEDS]      (defaults: target/release/chatsim, "1 2")
# The big worlds (bench-reference, scale-100k) are left out: minutes each, and they drive the
# same code as the small ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/chatsim}
seeds=${2:-1 2}
for f in scenarios/*.toml; do
  name=$(basename "$f" .toml)
  case "$name" in bench-reference|scale-100k) continue ;; esac
  for engine in madsim turmoil; do
    for seed in $seeds; do
      line=$("$bin" run "$f" --seed "$seed" --engine "$engine" --json --no-report 2>/dev/null \
        | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["trace_hash"], "broken:" + ",".join(i["name"] for i in j["invariants"] if not i["holds"]))' \
        || echo "failed-to-run")
      echo "$name $engine $seed $line"
    done
  done
done
