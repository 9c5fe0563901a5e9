#!/usr/bin/env bash
# The table in docs/zoo.md, measured again: for every zoo bug, seeds 1..20 of its scenario
# with the bug on (how many break the named invariant, the first that does, and the median
# number of seeds a swarm starting at each of the 20 seeds runs until one does, wrapping round),
# then `chatsim hunt` (the story it keeps, and how long catching and shrinking took). Prints
# the markdown rows; paste them over the table after any change that moves traces.
#   usage: scripts/zoo-table.sh          (SEEDS=20 by default)
#   needs: python3
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p chatsim
bin=target/release/chatsim
seeds=${SEEDS:-20}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "| bug | caught by | scenario | seeds caught of $seeds | first seed | median seeds to a catch | shrunk to events (seed kept) | first caught after | hunt took |"
echo "|---|---|---|---|---|---|---|---|---|"
"$bin" bugs | tail -n +2 | awk 'NF && $1 != "A" {print $1}' | while read -r bug; do
  "$bin" hunt --bug "$bug" --out "$dir/$bug.toml" >"$dir/hunt.txt" 2>/dev/null || true
  scenario=$(grep -o 'of [a-z0-9-]*:' "$dir/hunt.txt" | head -n 1 | sed 's/^of //; s/:$//')
  "$bin" swarm "scenarios/$scenario.toml" --bug "$bug" --seeds "1..$seeds" --json --no-report \
    >"$dir/swarm.json" 2>/dev/null || true
  python3 - "$bug" "$scenario" "$seeds" "$dir/swarm.json" "$dir/hunt.txt" <<'PY'
import json, re, statistics, sys
bug, scenario, n, swarm, hunt = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
said = open(hunt).read()
m = re.search(r": (\S+) broke; kept seed (\d+), .*?\((\d+) events; first caught after ([\d.]+) s, all shrunk after ([\d.]+) s\)", said)
if not m:
    print(f"| `{bug}` | ? | {scenario} | not caught by `chatsim hunt` | | | | | |")
    sys.exit()
inv, kept, events, first, total = m.groups()
g = json.load(open(swarm))
caught = sorted(s["seed"] for s in g["seeds"] if inv in s["broken"])
def until(start):
    for k in range(n):
        if (start - 1 + k) % n + 1 in caught:
            return k + 1
    return None
waits = [w for w in (until(s) for s in range(1, n + 1)) if w is not None]
median = statistics.median(waits) if waits else "-"
median = int(median) if median != "-" and median == int(median) else median
print(f"| `{bug}` | `{inv}` | {scenario} | {len(caught)} | {caught[0] if caught else '-'} | {median} | {events} (seed {kept}) | {first} s | {total} s |")
PY
done
