#!/usr/bin/env bash
# The CI gate sized in seeds, measured: every judged scenario at once (`chatsim swarm
# scenarios`, one pool) with --jobs 1 and --jobs 2 on the same seeds, one after the other, so
# the speed-up is a ratio measured in one script; then the seeds a minute that gives, and how
# many seeds fit a 15-minute job. Then every zoo bug hunted (`chatsim hunt`, 100 seeds at most)
# with its wall time, against the 10-second target.
#   usage: reports/bench/gate.sh            (SEEDS=1..20 by default; HUNT=0 skips the hunts)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p chatsim
bin=target/release/chatsim
seeds=${SEEDS:-1..20}
gate() {
  "$bin" swarm scenarios --seeds "$seeds" --jobs "$1" --json --no-report 2>/dev/null |
    python3 -c 'import json,sys; g=json.load(sys.stdin); assert g["seeds_failed"]==0, [(s["scenario"], s["failing_seeds"]) for s in g["scenarios"] if s["failing_seeds"]]; print(g["seeds_run"], g["wall_seconds"], " ".join("%s=%.1f" % (s["scenario"], sum(o["wall_seconds"] for o in s["seeds"])) for s in g["scenarios"]))'
}
read -r n1 w1 per1 < <(gate 1)
read -r n2 w2 per2 < <(gate 2)
python3 - "$n1" "$w1" "$n2" "$w2" <<'PY'
import sys
n1, w1, n2, w2 = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
r1, r2 = n1 / w1 * 60, n2 / w2 * 60
print(f"gate: {n1} seeds; --jobs 1 {w1:.1f} s ({r1:.0f} seeds/min), --jobs 2 {w2:.1f} s ({r2:.0f} seeds/min); speed-up {w1 / w2:.2f}x")
print(f"a 15-minute job at --jobs 2 judges about {r2 * 15:,.0f} seeds (target 50,000)")
PY
echo "seconds of run per scenario (--jobs 2): $per2"
if [ "${HUNT:-1}" != 0 ]; then
  printf '%-30s %8s %s\n' bug wall_s outcome
  "$bin" bugs | tail -n +2 | awk 'NF && $1 != "A" {print $1}' | while read -r bug; do
    start=$(date +%s.%N)
    set +e
    out=$("$bin" hunt --bug "$bug" --out "/tmp/gate-hunt-$bug.toml" 2>/dev/null | head -n 1)
    set -e
    end=$(date +%s.%N)
    printf '%-30s %8.1f %s\n' "$bug" "$(python3 -c "print($end-$start)")" "${out:0:70}"
  done
fi
