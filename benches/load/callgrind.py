#!/usr/bin/env python3
"""Instructions per request under callgrind: a repeatable figure for A/B work on the
hot path (wall-clock and CPU-time figures move with whatever else shares the cores).

Each target runs under `valgrind --tool=callgrind` behind the same fixed nginx upstream
as run.py; 500 warm-up requests, the counters zeroed (`callgrind_control -z`), then
exactly `--requests` keep-alive requests over 4 connections, the counters dumped. The
figure printed is user-space instructions (Ir) of the whole process per request, and
the top functions by self cost per request with `--top N`.

    python3 benches/load/callgrind.py                       # bare pingora, pass-through, verify
    python3 benches/load/callgrind.py --only rotagate-1 --top 40
    python3 benches/load/callgrind.py --rotagate-bin OLD --only rotagate-1   # A/B

Needs valgrind (scripts/setup.sh --bench) and nginx. Release builds, as run.py makes.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the load script: builds, configs, the upstream)

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: callgrind\r\nAccept: */*\r\n"


def read_response(sock, buf):
    """Reads one HTTP/1.1 response with Content-Length from `sock`; returns the rest."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before a response")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    if not status.startswith(b"2"):
        raise RuntimeError(f"answer {status.decode()}: {head[:200]!r}")
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if not m:
        raise RuntimeError("answer without Content-Length")
    need = int(m.group(1))
    while len(rest) < need:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed inside a body")
        rest += chunk
    return rest[need:]


def drive(port, total, extra_header, connections=4):
    """Exactly `total` requests, round robin over `connections` keep-alive connections."""
    req = REQUEST + (extra_header.encode() + b"\r\n" if extra_header else b"") + b"\r\n"
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(connections)]
    bufs = [b""] * connections
    try:
        for i in range(total):
            k = i % connections
            socks[k].sendall(req)
            bufs[k] = read_response(socks[k], bufs[k])
    finally:
        for s in socks:
            s.close()


def totals(path):
    """Ir total and the functions by self cost, costliest first, from one callgrind
    output file. Read directly (callgrind_annotate of valgrind 3.19 lists inclusive
    tree roots first for these files): a cost line counts for the current `fn=`, except
    the one after `calls=`, which is the callee's inclusive cost."""
    total = None
    names = {}
    self_cost = {}
    current = None
    skip_next = False
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                total = int(line.split()[1])
            elif line.startswith(("fn=", "cfn=")):
                m = re.match(r"c?fn=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
                if m and m.group(2):
                    names[m.group(1)] = m.group(2)
                if m and line.startswith("fn="):
                    current = m.group(1)
            elif line.startswith("calls="):
                skip_next = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2 and current is not None:
                    self_cost[current] = self_cost.get(current, 0) + int(parts[-1])
    funcs = sorted(((n, names.get(k, k)) for k, n in self_cost.items()), reverse=True)
    return total, funcs


def measure(cmd, port, requests, header, work, name):
    out = os.path.join(work, f"{name}.callgrind")
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
    proc = subprocess.Popen(vg + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                drive(port, 1, header, connections=1)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    sys.exit(f"{name} did not serve under valgrind")
                time.sleep(0.2)
        drive(port, 500, header)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
        drive(port, requests, header)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    finally:
        # SIGINT: pingora's own Server keeps serving through a grace period on SIGTERM
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # the counters were dumped already
            proc.wait()
    # the dump after zeroing is the numbered file with the highest number
    dumps = sorted((f for f in os.listdir(work) if f.startswith(f"{name}.callgrind.")),
                   key=lambda f: int(f.rsplit(".", 1)[1].split("-")[0]))
    return totals(os.path.join(work, dumps[-1]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="pingora-1,rotagate-1,verify-1", help="comma-separated: pingora-1, rotagate-1, log-1 (default access log on), verify-1, remint-1")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--top", type=int, default=0, help="also print the N costliest functions (self) per request")
    ap.add_argument("--keep", metavar="DIR", help="keep the callgrind output files in DIR (for callgrind_annotate)")
    ap.add_argument("--rotagate-bin")
    ap.add_argument("--bare-bin")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if not run.which(tool):
            sys.exit(f"{tool} is missing: scripts/setup.sh --bench installs valgrind")
    keys = [k for k in args.only.split(",") if k]
    rotagate = args.rotagate_bin or run.build_rotagate(True)
    bare = args.bare_bin or (run.build_bare_pingora() if "pingora-1" in keys else None)
    with tempfile.TemporaryDirectory(prefix="rotagate-callgrind-") as work:
        up_port = run.free_port()
        upstream = run.start_upstream(work, up_port)
        try:
            run.wait_port(up_port, upstream, "upstream nginx")
            secret = os.urandom(32).hex().encode()
            with open(os.path.join(work, "secret"), "wb") as f:
                f.write(secret)
            env = run.Env(work, up_port, secret, rotagate, bare)
            now = int(time.time())
            token = run.hs256(secret, {"sub": "load-test", "iat": now - 60, "exp": now + 3600})
            for key in keys:
                port = run.free_port()
                header = None
                if key == "pingora-1":
                    cmd = [bare, "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{up_port}", "--threads", "1"]
                else:
                    session = {"rotagate-1": None, "log-1": None, "verify-1": "verify", "remint-1": "remint"}[key]
                    path = os.path.join(work, f"{key}.toml")
                    with open(path, "w") as f:
                        f.write(run.rotagate_config(env, port, 1, session, access_log=key == "log-1"))
                    cmd = [rotagate, "run", "--no-watch", "-c", path]
                    header = f"Cookie: session={token}" if session else None
                total, funcs = measure(cmd, port, args.requests, header, work, key)
                if args.keep:
                    os.makedirs(args.keep, exist_ok=True)
                    for f in os.listdir(work):
                        if f.startswith(f"{key}.callgrind"):
                            shutil.copy(os.path.join(work, f), args.keep)
                print(f"{key:12} {total / args.requests:>10,.0f} Ir/request")
                for n, f in funcs[: args.top]:
                    print(f"    {n / args.requests:>9,.0f}  {f[:150]}")
        finally:
            run.stop([upstream])


if __name__ == "__main__":
    main()
