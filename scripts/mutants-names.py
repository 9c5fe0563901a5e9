#!/usr/bin/env python3
"""Print a cargo-mutants --re regex that selects the mutants listed in a file (one name per
line, as in mutants.out/missed.txt), so a sample's survivors can be judged again: by a later
commit's swarm (scripts/mutants.sh all --re ...) or by the unit tests (scripts/mutants-unit.sh).

Line and column are matched loosely by default: an edit above a survivor moves it, and it is
still the same mutation of the same function. Two identical mutations in one function are then
both selected, which costs a run (scripts/mutants-report.py matches verdicts by exact name).
With --exact, only the names listed (for a tree whose system/ has not moved since).

Usage: scripts/mutants-names.py [--exact] MISSED_TXT
"""
import re
import sys

# Rust's regex rejects escapes of characters that are not special (Python's re.escape
# escapes spaces), so escape only what is.
META = set("\\.+*?()|[]{}^$")


def escape(s: str) -> str:
    return "".join("\\" + c if c in META else c for c in s)


def main() -> int:
    args = sys.argv[1:]
    exact = "--exact" in args
    args = [a for a in args if a != "--exact"]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        names = [l.strip() for l in open(args[0]) if l.strip()]
    except OSError as e:
        print(f"{args[0]}: {e.strerror}", file=sys.stderr)
        return 2
    parts = set()
    for n in names:
        m = re.match(r"^([^:]+):\d+:\d+: (.*)$", n)
        if not m:
            print(f"{args[0]}: not a mutant name: {n!r}", file=sys.stderr)
            return 2
        parts.add(escape(n) if exact else escape(m.group(1)) + r":\d+:\d+: " + escape(m.group(2)))
    if not parts:
        print(f"{args[0]}: no mutants listed", file=sys.stderr)
        return 1
    print("^(" + "|".join(sorted(parts)) + ")$")
    return 0


if __name__ == "__main__":
    sys.exit(main())
