#!/usr/bin/env bash
# Checker scaling: the small bench world (scenarios/bench-quick.toml) stretched to K times its
# messages over K times its simulated time (same users, same send rate, faults scaled alike),
# for K = 1, 10, 100 by default. Prints history events and the checkers' seconds (judge s,
# measured outside the simulation), and each point's ratio to the first: linear checkers give
# a judge ratio near the events ratio, n log n a little above it. Then each checker's seconds
# per K and its growth from the first K to the last, beside the events' growth.
#   usage: reports/bench/checkers.sh [K ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p chatsim
bin=target/release/chatsim
factors=("$@")
[ ${#factors[@]} -eq 0 ] && factors=(1 10 100)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf '%6s %10s %10s %10s %9s %12s %11s %8s\n' K messages events judge_s wall_s peak_rss_mb events_x judge_x
first_events=""; first_judge=""
for k in "${factors[@]}"; do
  f="$dir/bench-quick-x$k.toml"
  python3 - "$k" >"$f" <<'PY'
import sys
k = int(sys.argv[1])
end = 60_000 * k
print(f'''description = "bench-quick stretched {k}x: same users and send rate, {k}x the messages and time"
[topology]
users = 100
gateways = 4
shards = 2
replicas = 3
[workload]
messages = {1400 * k}
conversations = 200
send_window_ms = [1000, {end}]
[workload.groups]
count = 5
size = [3, 32]
messages = {600 * k}
changes = [0, {2 * k}]
[network]
latency_ms = [1, 10]
[run]
heal_at_ms = {end}
settle_ms = 30000
liveness_ms = 30000
[[fault]]
kind = "device-drop"
count = [{5 * k}, {20 * k}]
window_ms = [1000, {end - 1000}]
[[fault]]
kind = "kill"
targets = ["gateway", "shard", "replica"]
count = [{2 * k}, {6 * k}]
window_ms = [5000, {end - 1000}]
duration_ms = [500, 5000]''')
PY
  out=$(/usr/bin/time -f "%M" -o "$dir/rss" "$bin" run "$f" --seed 1 --json --no-report || true)
  printf '%s' "$out" >"$dir/k$k.json"
  read -r msgs events judge wall passed < <(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); s=r["stats"]; print(s["messages_sent"], s["history_events"], s["judge_seconds"], s["wall_seconds"], all(v["holds"] for v in r["invariants"]))' "$out")
  [ "$passed" = True ] || echo "K=$k: the run did not pass" >&2
  [ -z "$first_events" ] && { first_events=$events; first_judge=$judge; }
  printf '%6s %10s %10s %10.3f %9.1f %12d %11.1f %8.1f\n' "$k" "$msgs" "$events" "$judge" "$wall" "$(( $(cat "$dir/rss") / 1024 ))" \
    "$(python3 -c "print($events/$first_events)")" "$(python3 -c "print($judge/$first_judge)")"
done
echo
python3 - "$dir" "${factors[@]}" <<'PY'
import json, sys
d, ks = sys.argv[1], sys.argv[2:]
stats = [json.load(open(f"{d}/k{k}.json"))["stats"] for k in ks]
names = sorted(stats[0]["judge_seconds_by_invariant"])
print(f"{'checker':22}" + "".join(f"{'K=' + k:>10}" for k in ks) + f"{'growth':>9}")
for n in names:
    t = [s["judge_seconds_by_invariant"][n] for s in stats]
    growth = t[-1] / t[0] if t[0] > 0 else float("nan")
    print(f"{n:22}" + "".join(f"{x:10.3f}" for x in t) + f"{growth:9.1f}")
# The facts no_loss, liveness, conversation_order, receipts and authz share, built once.
t = [s.get("judge_seconds_shared", 0.0) for s in stats]
growth = t[-1] / t[0] if t[0] > 0 else float("nan")
print(f"{'(shared facts)':22}" + "".join(f"{x:10.3f}" for x in t) + f"{growth:9.1f}")
print(f"{'(events)':22}" + "".join(f"{s['history_events']:10d}" for s in stats)
      + f"{stats[-1]['history_events'] / stats[0]['history_events']:9.1f}")
PY
