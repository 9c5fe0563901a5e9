#!/usr/bin/env python3
"""Summarise a cargo-mutants output directory (its caught/missed/timeout/unviable lists) as
reports/mutants/latest.md: the counts, the kill rate over viable mutants, and every survivor.

Usage: scripts/mutants-report.py MUTANTS_OUT_DIR [SHARD] [COMMIT] > reports/mutants/latest.md
"""
import pathlib
import sys


def lines(d: pathlib.Path, name: str) -> list[str]:
    p = d / name
    return [l for l in p.read_text().splitlines() if l.strip()] if p.exists() else []


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    d = pathlib.Path(sys.argv[1])
    if (d / "mutants.out").is_dir():
        d = d / "mutants.out"
    if not (d / "caught.txt").exists():
        print(f"{d}: no caught.txt: not a cargo-mutants output directory", file=sys.stderr)
        return 2
    shard = sys.argv[2] if len(sys.argv) > 2 else "?"
    commit = sys.argv[3] if len(sys.argv) > 3 else "?"
    caught, missed = lines(d, "caught.txt"), lines(d, "missed.txt")
    timeout, unviable = lines(d, "timeout.txt"), lines(d, "unviable.txt")
    viable = len(caught) + len(missed) + len(timeout)
    done = viable + len(unviable)
    print("# Mutation score of chatsim-system (latest measured sample)\n")
    print(f"Shard {shard} (round-robin) of the mutants of `chatsim-system`, at commit {commit},")
    print("judged by the swarm in `sim/chatsim/tests/mutant_swarm.rs`. Produced by")
    print("`scripts/mutants-report.py`; how to re-run it is in `reports/mutants/README.md`.\n")
    print("| outcome | mutants |\n|---|---|")
    print(f"| caught | {len(caught)} |\n| missed | {len(missed)} |")
    print(f"| timeout (counted as caught) | {len(timeout)} |\n| unviable (does not build) | {len(unviable)} |")
    print(f"| tested | {done} |\n")
    if viable:
        rate = 100.0 * (len(caught) + len(timeout)) / viable
        print(f"Kill rate over viable mutants: **{rate:.1f}%** ({len(caught) + len(timeout)} of {viable}).\n")
    print("## Survivors\n")
    for m in missed:
        print(f"- `{m}`")
    if not missed:
        print("None.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
