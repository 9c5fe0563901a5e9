#!/usr/bin/env bash
# The frame checks fuzzed longer than CI does: SCALE times CI's 110,000 inputs (default 100,
# about 11 million; some minutes in release). A failing input lands in
# server/tests/fuzz.proptest-regressions: commit it, and every later run tries it first.
set -euo pipefail
cd "$(dirname "$0")/.."
CHATSIM_FUZZ_SCALE="${1:-100}" cargo test --release -p chatsim-server --test fuzz -- --nocapture
