#!/usr/bin/env bash
# The two engines side by side in one script: the same scenario and seeds on madsim and on
# turmoil, one worker each, alternating, so both see the same machine load. Prints wall
# seconds per engine and the ratio (turmoil / madsim); a ratio, not an absolute time, is the
# claim (these machines are shared and noisy).
#   usage: reports/bench/engines.sh [SCENARIO ...]   (default: smoke partition-heal groups)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p chatsim
bin=target/release/chatsim
seeds=${SEEDS:-1..10}
scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(smoke partition-heal groups)
printf '%-18s %6s %12s %12s %8s\n' scenario seeds madsim_s turmoil_s ratio
for s in "${scenarios[@]}"; do
  wall() {
    "$bin" swarm "scenarios/$s.toml" --seeds "$seeds" --jobs 1 --engine "$1" --json --no-report 2>/dev/null |
      python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["seeds_failed"]==0, r["failing_seeds"]; print(r["wall_seconds"])'
  }
  m=$(wall madsim); t=$(wall turmoil)
  printf '%-18s %6s %12.2f %12.2f %8.1f\n' "$s" "$seeds" "$m" "$t" "$(python3 -c "print($t/$m)")"
done
