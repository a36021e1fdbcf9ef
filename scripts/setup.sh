#!/usr/bin/env bash
# Installs what building and testing rotagate needs that a fresh Debian machine with
# Rust, gcc, Python and Node lacks: cmake (pingora's zlib-ng/zstd build), nginx and wrk
# (the load comparison), redis-server (the Redis store's tests start their own), and
# the npm packages of the interop tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# --build-only: just what building rotagate needs (the demo)
build_only=false
[ "${1:-}" = "--build-only" ] && build_only=true

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
if ! $build_only; then
  { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || need+=(nginx-light)
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! $build_only && [ -f tests/interop/package-lock.json ]; then
  npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error
fi
