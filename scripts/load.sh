#!/usr/bin/env bash
# chatsim against its floor, side by side, in one script on one machine: the same schedule
# (10,000 phones by default, 20% of texts to groups of 8) offered at rising rates to
# `chatsim serve` (on disk, and in memory) and to the bare WebSocket relay (`chatsim relay`),
# until each stops keeping up. Then each at half of chatsim's saturating rate, for p99.
# Writes reports/load/sweep/*.json and prints the table reports/load/README.md records.
#
#   scripts/load.sh                 # 10,000 phones, rates 250..8000
#   DEVICES=2000 RATES="500 1000" scripts/load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=${DEVICES:-10000}
DURATION=${DURATION:-10}
RATES=${RATES:-"250 500 1000 2000 4000 8000"}
OUT=reports/load/sweep
mkdir -p "$OUT"
cargo build --release -p chatsim >/dev/null
BIN=target/release/chatsim

# One run; its JSON in $OUT/<name>.json. Exit code 1 (a failed verdict) is kept, not fatal.
run() {
  local name=$1; shift
  "$BIN" load --json --devices "$DEVICES" --duration "$DURATION" --away-share 0 \
    --out "reports/load/$name" "$@" >"$OUT/$name.json" 2>"$OUT/$name.log" || true
}

# Whether a run kept up: every display arrived, p99 under a second, sends made at the rate.
kept_up() {
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok = (r["displayed"] >= r["owed"] and r["display"]["p99_ms"] < 1000
      and r["sent_per_s"] >= 0.95 * r["spec"]["rate"])
sys.exit(0 if ok else 1)
PY
}

declare -A SAT
for target in chatsim chatsim-memory floor; do
  case $target in
    chatsim) flags=() ;;
    chatsim-memory) flags=(--server-memory) ;;
    floor) flags=(--floor) ;;
  esac
  SAT[$target]=0
  for rate in $RATES; do
    name="$target-$rate"
    echo "== $name" >&2
    run "$name" --rate "$rate" "${flags[@]}"
    if kept_up "$OUT/$name.json"; then SAT[$target]=$rate; else break; fi
  done
done

half=$(( ${SAT[chatsim]} / 2 ))
[ "$half" -gt 0 ] || half=125
for target in chatsim floor; do
  case $target in chatsim) flags=() ;; floor) flags=(--floor) ;; esac
  echo "== $target-half ($half/s)" >&2
  run "$target-half" --rate "$half" "${flags[@]}"
done

python3 - "$OUT" "$RATES" "${SAT[chatsim]}" "${SAT[chatsim-memory]}" "${SAT[floor]}" "$half" <<'PY'
import json, os, sys
out, rates, sat_c, sat_m, sat_f, half = sys.argv[1], sys.argv[2].split(), *map(int, sys.argv[3:7])
def load(n):
    p = os.path.join(out, n + ".json")
    try:
        return json.load(open(p))
    except Exception:
        return None
print("| run | offered/s | sends/s | displays/s | ✓ p99 ms | shown p50 / p99 / p99.9 / max ms | server CPU ms per 1000 displays | generator CPU s | KiB per idle conn | verdict |")
print("|---|---|---|---|---|---|---|---|---|---|")
for t in ["chatsim", "chatsim-memory", "floor"]:
    for r in rates + ["half"]:
        j = load(f"{t}-{r}")
        if not j:
            continue
        d = j["display"]
        v = "PASS" if j["passed"] else "FAIL: " + ", ".join(x["name"] for x in j["verdict"] if not x["holds"]) if j["verdict"] else ("delivered all" if j["passed"] else "lost some")
        print(f"| {t}-{r} | {j['spec']['rate']:.0f} | {j['sent_per_s']:.0f} | {j['delivered_per_s']:.0f} | "
              f"{j['ack']['p99_ms']:.1f} | {d['p50_ms']:.1f} / {d['p99_ms']:.1f} / {d['p999_ms']:.1f} / {d['max_ms']:.1f} | "
              f"{(j.get('server_cpu_ms_per_1k') or 0):.0f} | {(j.get('generator_cpu_s') or 0):.1f} | "
              f"{(j.get('kib_per_idle_connection') or 0):.1f} | {v} |")
print()
print(f"saturating offered rate (highest kept up): chatsim {sat_c}/s, chatsim in memory {sat_m}/s, floor {sat_f}/s")
if sat_f:
    top = max(int(r) for r in rates)
    bound = "at most " if sat_f == top else ""
    print(f"chatsim msgs/s as a share of the floor's: {bound}{sat_c / sat_f:.2f} (in memory {bound}{sat_m / sat_f:.2f})"
          + ("; the floor kept up at the highest rate tried" if bound else ""))
c, f = load("chatsim-half"), load("floor-half")
if c and f:
    print(f"at {half}/s (half chatsim's saturating rate): p99 send to display chatsim {c['display']['p99_ms']:.1f} ms, "
          f"floor {f['display']['p99_ms']:.1f} ms, ratio {c['display']['p99_ms'] / max(f['display']['p99_ms'], 1e-3):.1f}")
PY
