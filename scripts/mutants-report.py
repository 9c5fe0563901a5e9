#!/usr/bin/env python3
"""Summarise a cargo-mutants sample as reports/mutants/latest.md: stage one (the swarm's
caught/missed/timeout/unviable lists), optionally stage two (the swarm's survivors judged again
by chatsim-system's unit tests, scripts/mutants-unit.sh), the kill rates over viable mutants,
and every survivor.

Usage: scripts/mutants-report.py SWARM_OUT [SHARD] [COMMIT] [UNIT_OUT UNIT_COMMIT] > latest.md
  SWARM_OUT   the --output directory of scripts/mutants.sh (or its mutants.out)
  UNIT_OUT    the --output directory of scripts/mutants-unit.sh (default SWARM_OUT/unit);
              several, comma-separated, when stage two ran in parts
"""
import pathlib
import re
import sys


def out_dir(p: str) -> pathlib.Path:
    d = pathlib.Path(p)
    return d / "mutants.out" if (d / "mutants.out").is_dir() else d


def lines(d: pathlib.Path, name: str) -> list[str]:
    p = d / name
    return [l for l in p.read_text().splitlines() if l.strip()] if p.exists() else []


def loose(name: str) -> str:
    """A mutant's name without line and column: stage two may run after an edit above it."""
    return re.sub(r"^([^:]+):\d+:\d+: ", r"\1: ", name)


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    d = out_dir(sys.argv[1])
    if not (d / "caught.txt").exists():
        print(f"{d}: no caught.txt: not a cargo-mutants output directory", file=sys.stderr)
        return 2
    shard = sys.argv[2] if len(sys.argv) > 2 else "?"
    commit = sys.argv[3] if len(sys.argv) > 3 else "?"
    units = [out_dir(u) for u in sys.argv[4].split(",")] if len(sys.argv) > 4 else [
        out_dir(str(d.parent / "unit"))
    ]
    unit_commit = sys.argv[5] if len(sys.argv) > 5 else "?"
    caught, missed = lines(d, "caught.txt"), lines(d, "missed.txt")
    timeout, unviable = lines(d, "timeout.txt"), lines(d, "unviable.txt")
    viable = len(caught) + len(missed) + len(timeout)
    done = viable + len(unviable)
    print("# Mutation score of chatsim-system (latest measured sample)\n")
    print(f"Shard {shard} (round-robin) of the mutants of `chatsim-system`, at commit {commit},")
    print("judged by the swarm in `sim/chatsim/tests/mutant_swarm.rs` (stage one). Produced by")
    print("`scripts/mutants-report.py`; how to re-run it is in `reports/mutants/README.md`.\n")
    print("## Stage one: the swarm\n")
    print("| outcome | mutants |\n|---|---|")
    print(f"| caught | {len(caught)} |\n| missed | {len(missed)} |")
    print(f"| timeout (counted as caught) | {len(timeout)} |\n| unviable (does not build) | {len(unviable)} |")
    print(f"| tested | {done} |\n")
    swarm_killed = len(caught) + len(timeout)
    if viable:
        rate = 100.0 * swarm_killed / viable
        print(f"Kill rate of the swarm alone over viable mutants: **{rate:.1f}%** ({swarm_killed} of {viable}).\n")
    survivors = missed
    unit_caught = set(loose(n) for u in units for n in lines(u, "caught.txt") + lines(u, "timeout.txt"))
    unit_tested = unit_caught | set(loose(n) for u in units for n in lines(u, "missed.txt"))
    if unit_tested:
        judged = [m for m in missed if loose(m) in unit_tested]
        killed = [m for m in judged if loose(m) in unit_caught]
        print("## Stage two: the swarm's survivors, judged by the unit tests\n")
        print(f"At commit {unit_commit} (`scripts/mutants-unit.sh`, `cargo test -p chatsim-system`).\n")
        print("| outcome | mutants |\n|---|---|")
        print(f"| judged | {len(judged)} of {len(missed)} survivors |")
        print(f"| caught | {len(killed)} |\n| missed | {len(judged) - len(killed)} |\n")
        total = swarm_killed + len(killed)
        if viable:
            rate = 100.0 * total / viable
            print(f"Kill rate of the swarm and the unit tests together: **{rate:.1f}%** ({total} of {viable}).\n")
        survivors = [m for m in missed if loose(m) not in unit_caught]
    notes = read_notes()
    print("## Survivors\n")
    if not survivors:
        print("None.")
        return 0
    print("Each with what it is and what kills it, from `reports/mutants/survivors.tsv` (a")
    print("survivor with no note there is marked *unread*: nobody has looked at it yet).\n")
    print("| mutant | kind | why, and what kills it |\n|---|---|---|")
    for m in survivors:
        kind, why = notes.get(loose(m), ("*unread*", ""))
        print(f"| `{m}` | {kind} | {why} |")
    unread = sum(1 for m in survivors if loose(m) not in notes)
    print(f"\n{len(survivors) - unread} of {len(survivors)} survivors read.")
    # A note whose kind starts with **killed** records a kill by a later swarm, checked by
    # hand (the mutant applied, the named scenarios run): counted apart, never merged into
    # the measured rates above.
    later = sum(1 for m in survivors if notes.get(loose(m), ("", ""))[0].startswith("**killed**"))
    if later and viable:
        total = viable - len(survivors) + later
        print(f"\nWith the {later} killed since by a later swarm (checked by hand, not re-measured):"
              f" {100.0 * total / viable:.1f}% ({total} of {viable}).")
    return 0


def read_notes() -> dict[str, tuple[str, str]]:
    """reports/mutants/survivors.tsv: name without line and column, kind, explanation."""
    p = pathlib.Path(__file__).resolve().parent.parent / "reports" / "mutants" / "survivors.tsv"
    notes = {}
    if p.exists():
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                print(f"{p}:{n}: expected 3 tab-separated fields, got {len(parts)}", file=sys.stderr)
                continue
            notes[parts[0]] = (parts[1], parts[2])
    return notes


if __name__ == "__main__":
    sys.exit(main())
