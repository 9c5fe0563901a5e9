#!/usr/bin/env bash
# Where a run's wall time goes, by part of the system: perf samples the CPU clock (a software
# event, so it works in VMs without hardware counters) with DWARF call stacks, and each sample
# is put in the first of these buckets one of its frames belongs to (a sample under both the
# device and X25519 counts as X25519). Run it on an otherwise idle machine; the shares, not the
# seconds, are the claim.
#   usage: [PERF_HZ=499] reports/bench/profile.sh [SCENARIO [SEED]]   (default: scenarios/bench-quick.toml 1;
#          lower PERF_HZ for long runs: each sample keeps 16 KiB of stack)
#   needs: perf (Debian: linux-perf), python3
set -euo pipefail
cd "$(dirname "$0")/../.."
scenario=${1:-scenarios/bench-quick.toml}
seed=${2:-1}
cargo build --release -q -p chatsim
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
perf record -q -e cpu-clock -F "${PERF_HZ:-499}" --call-graph dwarf,16384 -o "$dir/perf.data" \
  target/release/chatsim run "$scenario" --seed "$seed" --no-report >/dev/null 2>"$dir/perf.err" \
  || { cat "$dir/perf.err" >&2; exit 1; }
perf script -i "$dir/perf.data" 2>/dev/null >"$dir/perf.txt"
python3 - "$dir/perf.txt" <<'PY'
import collections, re, sys
# First match wins, so the narrower buckets come first.
BUCKETS = [
    ("checkers (after the run)", "chatsim_judge::checkers::check_all"),
    ("X25519 agreements (e2e sessions)", "diffie_hellman"),
    ("recorder: digest, screen, frame log", "Recorder::"),
    ("wire encode (postcard)", "wire::encode"),
    ("wire decode (postcard)", "wire::decode"),
    ("device machine", "chatsim_system::device::"),
    ("storage machine", "chatsim_system::storage::"),
    ("shard machine", "chatsim_system::shard::"),
    ("replica machine", "chatsim_system::replica::"),
    ("gateway machine", "chatsim_system::gateway::"),
    ("session and push machines", "chatsim_system::session"),
    ("other system code", "chatsim_system::"),
    ("engine glue: tasks, sockets, timers", "chatsim::engine::"),
]
samples, cur = [], []
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if not line.strip():
        if cur:
            samples.append(cur)
        cur = []
    elif line.startswith(("\t", " ")):
        parts = line.strip().split(" ", 1)
        if len(parts) == 2:
            cur.append(re.sub(r"\s\(.*\)$", "", parts[1]))
if cur:
    samples.append(cur)
counts = collections.Counter()
for stack in samples:
    for name, pattern in BUCKETS:
        if any(pattern in f for f in stack):
            counts[name] += 1
            break
    else:
        counts["elsewhere (setup, runtime outside our tasks)"] += 1
n = max(len(samples), 1)
print(f"{'share':>6}  bucket  ({len(samples)} samples)")
for name, k in counts.most_common():
    print(f"{100 * k / n:5.1f}%  {name}")
PY
