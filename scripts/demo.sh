#!/usr/bin/env bash
# Runs the built-in demo: a small app with rotagate in front of it, on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --build-only
exec cargo run --release --quiet -- demo "$@"
