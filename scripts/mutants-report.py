#!/usr/bin/env python3
"""Summarise a cargo-mutants sample as reports/mutants/latest.md: stage one (the swarm's
caught/missed/timeout/unviable lists), stage two (the swarm's survivors judged again by
chatsim-system's own tests, scripts/mutants-unit.sh), the kill rates over viable mutants, and
every survivor with the reason it survived (reports/mutants/survivors.tsv).

Usage: scripts/mutants-report.py --swarm DIR@COMMIT[,DIR@COMMIT...] [--unit DIR@COMMIT[,...]]
                                 [--sample FILE] [--shard 0/5] [--sample-commit C]
                                 > reports/mutants/latest.md
  --swarm   output directories of scripts/mutants.sh (or their mutants.out), each with the
            commit it ran at; a sample judged in parts lists every part
  --unit    output directories of scripts/mutants-unit.sh, each with its commit; a mutant
            any of them caught is killed (names must match the sample's exactly)
  --sample  the sample's mutant names, one a line (cargo mutants --list --shard ...): outcomes
            of mutants outside it are left out (cargo-mutants 27.1 runs its "delete field"
            mutants whatever --re says), and a mutant of it not yet judged is counted as such
  --sample-commit  the commit the sample was drawn at (for the text only)
Verdicts match by exact name, so every part must name mutants by the same lines: rename an
older part's lists first if system/src moved (the committed sample's 1be7768 part was renamed
to 7117396's lines; reports/mutants/README.md says how).
"""
import argparse
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


def parts(arg: str | None, flag: str) -> list[tuple[pathlib.Path, str]]:
    if not arg:
        return []
    out = []
    for item in arg.split(","):
        path, _, commit = item.partition("@")
        d = out_dir(path)
        if not (d / "caught.txt").exists():
            sys.exit(f"{flag} {path}: no caught.txt there: not a cargo-mutants output directory")
        out.append((d, commit or "?"))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--swarm", required=True)
    ap.add_argument("--unit")
    ap.add_argument("--sample")
    ap.add_argument("--shard", default="?")
    ap.add_argument("--sample-commit", default="?")
    a = ap.parse_args()
    swarm = parts(a.swarm, "--swarm")
    units = parts(a.unit, "--unit")
    sample = None
    if a.sample:
        p = pathlib.Path(a.sample)
        if not p.exists():
            sys.exit(f"--sample {p}: no such file")
        sample = [l.strip() for l in p.read_text().splitlines() if l.strip()]

    # Stage one: the last outcome of each mutant wins (a later part may re-judge a name).
    outcome: dict[str, str] = {}
    for d, _ in swarm:
        for kind, file in [("caught", "caught.txt"), ("missed", "missed.txt"),
                           ("timeout", "timeout.txt"), ("unviable", "unviable.txt")]:
            for n in lines(d, file):
                outcome[n] = kind
    names = sample if sample is not None else sorted(outcome)
    outside = sorted(set(outcome) - set(names))
    count = {k: [n for n in names if outcome.get(n) == k]
             for k in ("caught", "missed", "timeout", "unviable")}
    untested = [n for n in names if n not in outcome]
    viable = len(count["caught"]) + len(count["missed"]) + len(count["timeout"])
    swarm_killed = len(count["caught"]) + len(count["timeout"])
    commits = ", ".join(f"{c} ({sum(1 for n in names if n in set(lines(d, 'caught.txt') + lines(d, 'missed.txt') + lines(d, 'timeout.txt') + lines(d, 'unviable.txt')))} mutants)" for d, c in swarm)

    print("# Mutation score of chatsim-system (latest measured sample)\n")
    print(f"Shard {a.shard} (round-robin) of the mutants of `chatsim-system` as drawn at commit")
    print(f"{a.sample_commit} ({len(names)} mutants, named by their lines where the report was made; the list")
    print("is `reports/mutants/sample.txt`). Stage one,")
    print(f"the swarm in `sim/chatsim/tests/mutant_swarm.rs`, judged them at {commits}.")
    print("Produced by `scripts/mutants-report.py`; how to re-run it, and how to read this sample's")
    print("rates (which tests were written after its survivors were seen), is in")
    print("[`README.md`](README.md#the-current-sample).\n")
    print("## Stage one: the swarm\n")
    print("| outcome | mutants |\n|---|---|")
    print(f"| caught | {len(count['caught'])} |\n| missed | {len(count['missed'])} |")
    print(f"| timeout (counted as caught) | {len(count['timeout'])} |")
    print(f"| unviable (does not build) | {len(count['unviable'])} |")
    print(f"| not yet judged | {len(untested)} |")
    print(f"| tested | {len(names) - len(untested)} of {len(names)} |\n")
    if viable:
        rate = 100.0 * swarm_killed / viable
        print(f"Kill rate of the swarm alone over viable mutants: **{rate:.1f}%** ({swarm_killed} of {viable}).\n")
    if outside:
        print(f"Left out: {len(outside)} outcomes of mutants outside the sample (cargo-mutants 27.1 runs")
        print("its \"delete field\" mutants whatever `--re` says).\n")

    missed = count["missed"]
    survivors = missed
    if units:
        # Exact names: a loose one would let a caught sibling (the same operator elsewhere in
        # the function) stand for a survivor.
        unit_caught = {n for d, _ in units for n in lines(d, "caught.txt") + lines(d, "timeout.txt")}
        unit_tested = unit_caught | {n for d, _ in units for n in lines(d, "missed.txt")}
        judged = [m for m in missed if m in unit_tested]
        killed = [m for m in judged if m in unit_caught]
        at = ", ".join(c for _, c in units)
        print("## Stage two: the swarm's survivors, judged by the project's tests\n")
        print(f"At commit {at} (`scripts/mutants-unit.sh`: `cargo test -p chatsim-system`, the")
        print("machines' unit tests and `system/tests/`).\n")
        print("| outcome | mutants |\n|---|---|")
        print(f"| judged | {len(judged)} of {len(missed)} survivors |")
        print(f"| caught | {len(killed)} |\n| missed | {len(judged) - len(killed)} |\n")
        total = swarm_killed + len(killed)
        if viable:
            rate = 100.0 * total / viable
            print(f"Kill rate of the swarm and the tests together: **{rate:.1f}%** ({total} of {viable}).\n")
        survivors = [m for m in missed if m not in unit_caught]

    notes = read_notes()
    # Only a mutant that changes nothing any run or test could observe is left out here; one
    # masked by another mechanism, or reachable only by a dishonest peer, is not.
    equivalent = [m for m in survivors if notes.get(loose(m), ("", ""))[0] == "equivalent"]
    if viable and equivalent:
        killable = viable - len(equivalent)
        total = viable - len(survivors)
        print(f"Over the viable mutants that are not equivalent ({len(equivalent)} survivors change nothing")
        print(f"a run or a test can observe; each says why below): **{100.0 * total / killable:.1f}%**")
        print(f"({total} of {killable}).\n")
    print("## Survivors\n")
    if not survivors:
        print("None.")
        return 0
    print("Each with what it is and what kills it, from `reports/mutants/survivors.tsv` (a")
    print("survivor with no note there is marked *unread*: nobody has looked at it yet).\n")
    print("| mutant | kind | why, and what kills it |\n|---|---|---|")
    cell = lambda t: t.replace("|", "\\|")  # a `||` mutant must not end its table cell
    for m in survivors:
        kind, why = notes.get(loose(m), ("*unread*", ""))
        print(f"| `{cell(m)}` | {cell(kind)} | {cell(why)} |")
    unread = sum(1 for m in survivors if loose(m) not in notes)
    print(f"\n{len(survivors) - unread} of {len(survivors)} survivors read.")
    return 0


def read_notes() -> dict[str, tuple[str, str]]:
    """reports/mutants/survivors.tsv: name without line and column, kind, explanation."""
    p = pathlib.Path(__file__).resolve().parent.parent / "reports" / "mutants" / "survivors.tsv"
    notes = {}
    if p.exists():
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                print(f"{p}:{n}: expected 3 tab-separated fields, got {len(fields)}", file=sys.stderr)
                continue
            notes[fields[0]] = (fields[1], fields[2])
    return notes


if __name__ == "__main__":
    sys.exit(main())
