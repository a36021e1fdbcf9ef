#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs what is
# missing (scripts/setup.sh), runs every test (unit, end-to-end, interop, process),
# checks that the benchmarks build, and smoke-runs the load comparison script.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --all-targets --no-fail-fast
cargo test --doc
python3 benches/load/run.py --smoke
