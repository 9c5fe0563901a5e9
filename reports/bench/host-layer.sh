#!/usr/bin/env bash
# Side by side: `chatsim bench --quick` on two builds, alternating, so both see the same
# machine noise. Prints each run's full/floor ratio and the full phase's wall time, then the
# medians. Usage: reports/bench/host-layer.sh OLD_BINARY NEW_BINARY [ROUNDS]
set -euo pipefail
old=$1 new=$2 rounds=${3:-5}
out=$(mktemp -d)
for i in $(seq "$rounds"); do
  for which in old new; do
    bin=$old; [ "$which" = new ] && bin=$new
    "$bin" bench --quick --json > "$out/$which-$i.json"
  done
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
for which in ("old", "new"):
    ratios, walls = [], []
    for i in range(1, rounds + 1):
        j = json.load(open(f"{out}/{which}-{i}.json"))
        full = next(p for p in j["phases"] if p["name"] == "full")
        ratios.append(j["ratio"]); walls.append(full["wall_seconds"])
    print(f"{which}: ratio " + " ".join(f"{r:.3f}" for r in ratios)
          + f"  median {statistics.median(ratios):.3f}; full wall s "
          + " ".join(f"{w:.2f}" for w in walls) + f"  median {statistics.median(walls):.2f}")
PY
