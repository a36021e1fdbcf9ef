#!/usr/bin/env bash
# Installs what building and testing rotagate needs that a fresh Debian machine with
# Rust, gcc, Python and Node lacks: cmake (pingora's zlib-ng/zstd build), nginx and wrk
# (the load comparison), redis-server (the Redis store's tests start their own), curl
# and openssl (real TLS clients for the TLS listener's tests), and the npm packages of
# the interop tests.
#   --build-only  just what building rotagate needs (the demo)
#   --bench       also the peers of the full load comparison (benches/load/run.py):
#                 HAProxy, Caddy and h2load (nghttp2-client), and valgrind for the
#                 instruction counts (benches/load/callgrind.py), from Debian's packages;
#                 a package the archive lacks is skipped (run.py skips that peer)
set -euo pipefail
cd "$(dirname "$0")/.."

build_only=false
bench=false
[ "${1:-}" = "--build-only" ] && build_only=true
[ "${1:-}" = "--bench" ] && bench=true

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
if ! $build_only; then
  { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; } || need+=(nginx-light)
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
  command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
  # the TLS listener's tests: curl --http2 and openssl s_client as real TLS clients
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v openssl >/dev/null 2>&1 || need+=(openssl)
  # https upstreams trust the system roots by default (tests check an untrusted CA fails)
  [ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if $bench; then
  peers=()
  { command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; } || peers+=(haproxy)
  command -v caddy >/dev/null 2>&1 || peers+=(caddy)
  command -v h2load >/dev/null 2>&1 || peers+=(nghttp2-client)
  command -v valgrind >/dev/null 2>&1 || peers+=(valgrind)
  if [ "${#peers[@]}" -gt 0 ]; then
    $SUDO apt-get update -qq
    for p in "${peers[@]}"; do
      # one at a time: a package missing from this archive skips that peer only
      if apt-cache show "$p" >/dev/null 2>&1; then
        echo "setup: installing $p"
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$p" >/dev/null
      else
        echo "setup: $p is not in this system's package archive; run.py skips it"
      fi
    done
  fi
fi

if ! $build_only && [ -f tests/interop/package-lock.json ]; then
  npm ci --prefix tests/interop --no-audit --no-fund --loglevel=error
fi
