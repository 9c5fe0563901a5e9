#!/usr/bin/env bash
# The CI gate sized in time, measured: `chatsim swarm scenarios --for BUDGET --jobs 2` over every
# judged scenario, each an equal share of the workers' time, then a table of how many seeds each
# scenario judged, its range, its failures and its seconds of run, written to
# reports/bench/timed-gate.txt with the totals. Which seeds fit depends on the machine and its
# load: run it on an otherwise idle machine.
#   usage: reports/bench/timed-gate.sh [BUDGET]      (default 15m; e.g. 60s for a quick look)
set -euo pipefail
cd "$(dirname "$0")/../.."
budget=${1:-15m}
cargo build --release -q -p chatsim
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
target/release/chatsim swarm scenarios --for "$budget" --jobs 2 --json --no-report >"$out" 2>/dev/null
code=$?
set -e
[ "$code" -le 1 ] || { echo "the gate exited $code" >&2; exit "$code"; }
python3 - "$out" "$budget" "$(git rev-parse --short HEAD)" <<'PY' | tee reports/bench/timed-gate.txt
import json, sys
g = json.load(open(sys.argv[1]))
print(f"chatsim swarm scenarios --for {sys.argv[2]} --jobs 2, commit {sys.argv[3]}, binary {g['binary']}")
print(f"{'scenario':<28} {'seeds':>6} {'range':>12} {'failed':>6} {'run s':>7} {'s/seed':>7}")
for s in sorted(g["scenarios"], key=lambda s: -s["seeds_run"]):
    run = sum(o["wall_seconds"] for o in s["seeds"])
    rng = f"{s['seed_range']['first']}..{s['seed_range']['last']}" if s["seeds_run"] else "-"
    per = run / s["seeds_run"] if s["seeds_run"] else 0
    print(f"{s['scenario']:<28} {s['seeds_run']:>6} {rng:>12} {s['seeds_failed']:>6} {run:>7.1f} {per:>7.3f}")
    for f in s["failures"]:
        print(f"    seed {f['seed']}: {', '.join(f['broken'])}: {f['first_violation'][:140]}")
print(f"total: {g['seeds_run']:,} seeds in {g['wall_seconds']:.1f} s of wall "
      f"({g['seeds_per_minute']:.0f} a minute), {g['seeds_failed']} failing, "
      f"unjudged: {', '.join(g['unjudged']) or 'none'}")
PY
