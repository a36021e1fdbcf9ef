#!/usr/bin/env python3
"""End-to-end load comparison on loopback, every target in one run (DESIGN §8).

A fixed upstream (nginx answering a constant 200) sits behind each target; wrk drives
the targets in interleaved rounds, and for every target the script reports requests/s,
p50/p99 latency and the proxy's own CPU time per request: utime+stime of the proxy's
processes, read from /proc before and after each wrk run, divided by the requests wrk
counted. CPU per request is the figure that survives sharing 2 cores with other work;
the ratios between targets (printed last) are what to compare, not the absolute numbers.

Targets (TARGETS below: one spec each, add one by appending to the list):
  nginx 1 and 2 workers, HAProxy 1 thread, Caddy GOMAXPROCS=1, a bare pingora proxy
  (benches/load/bare_pingora.rs: pingora's own Server and listener, no hooks), rotagate
  pass-through with 1 and 2 threads, verifying an HS256 session on every request,
  re-minting it on every request, pass-through with its default access logging, and
  a vault session on every request (memory, embedded and Redis stores).
  Peers whose binary is missing are skipped with a note (scripts/setup.sh --bench
  installs HAProxy, Caddy and h2load from Debian's packages).

    python3 benches/load/run.py                 # full run: release builds, 3 rounds of 5 s,
                                                #   memory (idle, 10,000 idle connections),
                                                #   p99 added latency at half of peak (h2load)
    python3 benches/load/run.py --smoke         # debug build, nginx + rotagate, 1 short round (CI)
    python3 benches/load/run.py --soak          # 5 minutes at peak on rotagate: RSS growth
    python3 benches/load/run.py --only nginx-1,rotagate-1   # a subset (keys as printed)

Nothing is asserted but that every answer was a 2xx and the session targets really
verify or re-mint: the targets of DESIGN §8 are printed as met or not.
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---- processes and /proc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            # the work directory goes with the run: show what the process said first
            tail = ""
            if getattr(proc, "log_path", None) and os.path.exists(proc.log_path):
                with open(proc.log_path, errors="replace") as f:
                    tail = "".join(f.readlines()[-20:])
            sys.exit(f"{what} exited early with {proc.returncode}\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


def tree(root):
    """The pid `root` and all its descendants (nginx's and Caddy's workers)."""
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    pids, todo = [], [root]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(c for c, pp in parent.items() if pp == p)
    return pids


def cpu_seconds(root):
    """utime+stime of `root`'s process tree, in seconds."""
    total = 0
    for p in tree(root):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


def rss_kib(root):
    """Resident set of `root`'s process tree, in KiB."""
    total = 0
    for p in tree(root):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * PAGE // 1024
        except (OSError, IndexError, ValueError):
            pass
    return total


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(n, soft), hard) if hard != resource.RLIM_INFINITY else max(n, soft)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def stop(procs):
    for p in procs:
        if p.poll() is None:
            # pingora's own Server keeps serving for its grace period after SIGTERM
            # (sharing the port by SO_REUSEPORT with the next one): SIGINT ends it now
            p.send_signal(getattr(p, "stop_signal", signal.SIGTERM))
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


# ---- tokens


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hs256(secret, claims):
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


# ---- builds


def build_rotagate(release):
    cmd = ["cargo", "build", "--quiet", "--bin", "rotagate"] + (["--release"] if release else [])
    subprocess.run(cmd, cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release" if release else "debug", "rotagate")


def build_bare_pingora():
    """Builds benches/load/bare_pingora.rs (release) and returns its executable."""
    out = subprocess.run(
        ["cargo", "build", "--quiet", "--release", "--bench", "bare_pingora", "--message-format=json"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "bare_pingora" and msg.get("executable"):
            return msg["executable"]
    sys.exit("could not find the bare_pingora executable in cargo's output")


def which(*names):
    for n in names:
        p = shutil.which(n) or (f"/usr/sbin/{n}" if os.path.exists(f"/usr/sbin/{n}") else None)
        if p:
            return p
    return None


# ---- the targets: each one a spec; `start` returns the Popen of the proxy


class Env:
    """What every start function gets."""

    def __init__(self, work, up_port, secret, rotagate, bare, baseline=None):
        self.work, self.up_port, self.secret, self.rotagate, self.bare = work, up_port, secret, rotagate, bare
        self.baseline = baseline


def nginx_conf(d, workers, server_block):
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  {server_block}
}}
""")
    return conf


def start_upstream(work, port):
    d = os.path.join(work, "upstream")
    conf = nginx_conf(d, 1, f"""
  server {{ listen 127.0.0.1:{port} backlog=16384; keepalive_requests 1000000;
    location / {{ default_type text/plain; return 200 "hello from the fixed upstream\\n"; }} }}""")
    return subprocess.Popen([which("nginx"), "-c", conf, "-p", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_nginx(workers):
    def start(env, port, name):
        d = os.path.join(env.work, name)
        conf = nginx_conf(d, workers, f"""
  upstream app {{ server 127.0.0.1:{env.up_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port} backlog=16384; keepalive_requests 1000000; keepalive_timeout 300s;
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; }} }}""")
        return subprocess.Popen([which("nginx"), "-c", conf, "-p", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return start


def start_haproxy(env, port, name):
    conf = os.path.join(env.work, f"{name}.cfg")
    with open(conf, "w") as f:
        f.write(f"""
global
  nbthread 1
  maxconn 9000
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 30s
  timeout http-keep-alive 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:{port}
  option forwardfor
  default_backend app
backend app
  server up 127.0.0.1:{env.up_port}
""")
    return subprocess.Popen([which("haproxy"), "-db", "-f", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_caddy(env, port, name):
    d = os.path.join(env.work, name)
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "Caddyfile")
    with open(conf, "w") as f:
        f.write(f"""{{
  admin off
  auto_https off
}}
http://127.0.0.1:{port} {{
  reverse_proxy 127.0.0.1:{env.up_port}
}}
""")
    penv = dict(os.environ, GOMAXPROCS="1", HOME=d, XDG_DATA_HOME=d, XDG_CONFIG_HOME=d)
    return subprocess.Popen([which("caddy"), "run", "--config", conf, "--adapter", "caddyfile"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=penv)


def start_bare(threads):
    def start(env, port, name):
        cmd = [env.bare, "--listen", f"127.0.0.1:{port}", "--upstream", f"127.0.0.1:{env.up_port}", "--threads", str(threads)]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        p.stop_signal = signal.SIGINT
        return p

    return start


def rotagate_config(env, port, threads, session=None, access_log=False, extra="", log_key=True):
    """A rotagate config: `session` is None (pass-through), "verify" or "remint".
    `log_key` False leaves out `[log]` (for a --baseline binary that predates it)."""
    text = f'[listen]\naddress = "127.0.0.1:{port}"\nthreads = {threads}\nmax_connections = 10100\n'
    text += 'keepalive_timeout = "300s"\n' + extra
    text += f'[upstream]\nurl = "http://127.0.0.1:{env.up_port}"\n'
    # access lines off, as nginx's access_log is off here (one target has them on)
    if log_key:
        text += f"[log]\naccess = {'true' if access_log else 'false'}\n"
    if session:
        # verify: the token is younger than rotate_every, so it is only verified
        every = "0s" if session == "remint" else "1h"
        text += f'[session]\nmode = "reissue"\nrotate_every = "{every}"\n'
        text += '[session.reissue]\ncookie = "session"\nformat = "jwt"\n'
        text += f'[[session.reissue.keys]]\nalg = "HS256"\nsecret = "file:{env.work}/secret"\n'
        text += '[[route]]\nname = "app"\nmatch = "/:path*"\n'
    return text


def log_path(env, name):
    """Where a rotagate target's stderr (its log) goes: not in the directory of its
    config, which rotagate watches for changes, so a log line written is not also an
    inotify event for the watcher thread (as a log shipper's pipe would not be)."""
    d = os.path.join(env.work, "logs")
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, f"{name}.log")


def logged(cmd, env, name, penv):
    """`cmd` started with its stderr into `log_path` (shown if it exits at start)."""
    path = log_path(env, name)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(path, "w"), env=penv)
    p.log_path = path
    return p


def start_rotagate(threads, session=None, access_log=False, baseline=False, log_to_file=False):
    """`log_to_file`: stderr into a file (ext4 here) instead of a pipe drained by a
    reader, as a container runtime or a log shipper reads it (the default)."""
    def start(env, port, name):
        path = os.path.join(env.work, f"{name}.toml")
        with open(path, "w") as f:
            f.write(rotagate_config(env, port, threads, session, access_log, log_key=not baseline))
        penv = dict(os.environ)
        penv.pop("RUST_LOG", None)  # the default filter: what operators get
        if baseline and not access_log:
            penv["RUST_LOG"] = "warn,pingora_core::connectors=off"  # its way to turn access lines off
        binary = env.baseline if baseline else env.rotagate
        cmd = [binary, "run", "-c", path]
        if log_to_file or not access_log:
            return logged(cmd, env, name, penv)
        # the log into a pipe, drained by a reader outside the proxy's process tree
        # (its CPU is the shipper's); the reader ends when the proxy closes the pipe
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=penv)
        subprocess.Popen(["cat"], stdin=p.stderr, stdout=subprocess.DEVNULL)
        p.stderr.close()
        return p

    return start


class Target:
    """One thing to load. `prepare(t)`, when given, runs once the target listens and
    returns the request header its wrk runs carry (the vault target's handle)."""

    def __init__(self, key, label, start, needs=None, session=None, smoke=False, prepare=None):
        self.key, self.label, self.start, self.needs, self.session, self.smoke = key, label, start, needs, session, smoke
        self.prepare, self.header = prepare, None
        self.proc, self.port = None, None

    def request_header(self, session_header):
        """The header this target's requests carry: its own, or the HS256 session's."""
        return self.header or (session_header if self.session else None)


EXTRA_PROCS = []  # helpers a target needs (its redis-server), stopped with the targets


def start_redis(work):
    """A redis-server of its own for the `vault-redis` target (AOF, fsync every second,
    noeviction: the README's recommended setting). Returns its port."""
    port = free_port()
    d = os.path.join(work, "redis")
    os.makedirs(d, exist_ok=True)
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", d,
                             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                             "--maxmemory-policy", "noeviction"], stdout=subprocess.DEVNULL)
    EXTRA_PROCS.append(proc)
    wait_port(port, proc, "redis-server")
    return port


def start_vault(threads, store="memory"):
    """rotagate in vault mode (`store`: memory, embedded or redis). The fixed upstream cannot log anyone in,
    so `vault_handle` makes the family by adoption: one request carrying the captured
    cookie `sid` gets the handle, and every wrk request then presents it (handle verify,
    store read, credential decrypt, inject; no rotation within `rotate_every`)."""

    def start(env, port, name):
        with open(os.path.join(env.work, "vault.key"), "wb") as f:
            f.write(os.urandom(32).hex().encode())
        path = os.path.join(env.work, f"{name}.toml")
        threads_line = f"threads = {threads}\n" if threads else ""
        store_keys = f'store = "{store}"\n'
        if store == "embedded":
            store_keys += f'store_path = "{env.work}/{name}.redb"\n'
        elif store == "redis":
            store_keys = f'store = "redis://127.0.0.1:{start_redis(env.work)}/0"\n'
        with open(path, "w") as f:
            f.write(f'[listen]\naddress = "127.0.0.1:{port}"\n{threads_line}[upstream]\nurl = "http://127.0.0.1:{env.up_port}"\n'
                    + '[log]\naccess = false\n'
                    + '[session]\nmode = "vault"\nrotate_every = "1h"\nidle_timeout = "1h"\n' + store_keys
                    + f'[session.vault]\ncapture = ["sid"]\nsecrets = ["file:{env.work}/vault.key"]\n'
                    + '[[route]]\nname = "app"\nmatch = "/:path*"\n')
        penv = dict(os.environ)
        penv.pop("RUST_LOG", None)
        return logged([env.rotagate, "run", "-c", path], env, name, penv)

    return start


def vault_handle(t):
    probe = urllib.request.Request(f"http://127.0.0.1:{t.port}/", headers={"Cookie": "sid=load-test-session"})
    with urllib.request.urlopen(probe) as r:
        handle = next((c.split(";")[0] for c in r.headers.get_all("Set-Cookie") or [] if c.startswith("rg=")), None)
    if not handle:
        sys.exit("the vault rotagate did not hand out a handle")
    return f"Cookie: {handle}"


TARGETS = [
    Target("nginx-1", "nginx, 1 worker", start_nginx(1), needs="nginx", smoke=True),
    Target("nginx-2", "nginx, 2 workers", start_nginx(2), needs="nginx"),
    Target("haproxy-1", "HAProxy, 1 thread", start_haproxy, needs="haproxy"),
    Target("caddy-1", "Caddy, GOMAXPROCS=1", start_caddy, needs="caddy"),
    Target("pingora-1", "bare pingora, 1 thread", start_bare(1), needs="bare"),
    Target("rotagate-1", "rotagate pass-through, 1 thread", start_rotagate(1), smoke=True),
    Target("rotagate-2", "rotagate pass-through, 2 threads", start_rotagate(2)),
    Target("verify-1", "rotagate HS256 verify every request, 1 thread", start_rotagate(1, "verify"), session="verify", smoke=True),
    Target("remint-1", "rotagate HS256 re-mint every request, 1 thread", start_rotagate(1, "remint"), session="remint", smoke=True),
    Target("log-1", "rotagate pass-through + default access log, 1 thread", start_rotagate(1, access_log=True)),
    Target("logfile-1", "the same, the log into a file (ext4)", start_rotagate(1, access_log=True, log_to_file=True)),
    Target("vault-1", "rotagate vault session (memory store), 1 thread", start_vault(1), smoke=True, prepare=vault_handle),
    Target("vault-embedded-1", "rotagate vault session (embedded store), 1 thread", start_vault(1, "embedded"), prepare=vault_handle),
    Target("vault-redis-1", "rotagate vault session (Redis store), 1 thread", start_vault(1, "redis"), needs="redis-server", prepare=vault_handle),
]

# with --baseline BIN: the same rotagate modes run by another binary (an A/B in one run)
BASELINE = [
    Target("base-rotagate-1", "baseline: pass-through, 1 thread", start_rotagate(1, baseline=True)),
    Target("base-rotagate-2", "baseline: pass-through, 2 threads", start_rotagate(2, baseline=True)),
    Target("base-verify-1", "baseline: HS256 verify, 1 thread", start_rotagate(1, "verify", baseline=True), session="verify"),
    Target("base-remint-1", "baseline: HS256 re-mint, 1 thread", start_rotagate(1, "remint", baseline=True), session="remint"),
    Target("base-log-1", "baseline: pass-through + access log, 1 thread", start_rotagate(1, access_log=True, baseline=True)),
]


# ---- load generators


def wrk(url, seconds, conns, header=None):
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", url]
    if header:
        cmd[1:1] = ["-H", header]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"^\s*(\d+) requests in", out, re.M).group(1))

    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v if unit == "ms" else v * 1000

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = (int(errors.group(1)) if errors else 0) + (sum(int(g) for g in sock.groups()) if sock else 0)
    return {"rps": rps, "requests": requests, "p50": lat("50"), "p99": lat("99"), "bad": bad}


def measure(t, seconds, conns, header):
    """One wrk run against `t`, with the CPU its processes used meanwhile."""
    before = cpu_seconds(t.proc.pid)
    r = wrk(f"http://127.0.0.1:{t.port}/", seconds, conns, t.request_header(header))
    used = cpu_seconds(t.proc.pid) - before
    r["cpu_us"] = used * 1e6 / max(r["requests"], 1)
    return r


def h2load_p(url, rate, seconds, clients, header, logfile):
    """A fixed-rate run (`rate` requests/s in all): p50/p99 in ms from h2load's log."""
    per = max(1, round(rate / clients))
    cmd = ["h2load", "--h1", f"-c{clients}", f"--rps={per}", f"-D{seconds}", "--warm-up-time=1",
           f"--log-file={logfile}", url]
    if header:
        cmd[1:1] = ["-H", header]
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    lat = []
    bad = 0
    with open(logfile) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3:
                if not cols[1].startswith("2"):
                    bad += 1
                lat.append(int(cols[2]) / 1000)
    lat.sort()
    if not lat:
        return None
    q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
    return {"rate": per * clients, "n": len(lat), "p50": q(0.50), "p99": q(0.99), "bad": bad}


# ---- memory


def open_idle(port, n):
    """`n` keep-alive connections, one request answered on each, left open."""
    socks = []
    req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(req)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                raise OSError("closed before an answer")
            head += chunk
        if not head.startswith(b"HTTP/1.1 200"):
            raise OSError(f"unexpected answer {head[:40]!r}")
        socks.append(s)
    return socks


def memory(env, targets, conns):
    """Idle RSS (started, one request served) and RSS with `conns` idle keep-alive
    connections, for each target in `targets`, one at a time on a fresh process."""
    have = raise_nofile(conns + 1000)
    if have < conns + 100:
        print(f"note: RLIMIT_NOFILE is {have}: using {have - 200} connections")
        conns = have - 200
    rows = []
    for t in targets:
        port = free_port()
        proc = t.start(env, port, f"mem-{t.key}")
        try:
            wait_port(port, proc, t.label)
            open_idle(port, 1)[0].close()
            time.sleep(0.5)
            idle = rss_kib(proc.pid)
            socks = open_idle(port, conns)
            time.sleep(0.5)
            loaded = rss_kib(proc.pid)
            for s in socks:
                s.close()
            rows.append((t, idle, loaded, (loaded - idle) * 1024 / conns))
        finally:
            stop([proc])
    print(f"\nmemory: RSS idle (one request served) and with {conns} idle keep-alive connections")
    print(f"{'target':<52}{'idle MiB':>10}{'loaded MiB':>12}{'B/conn':>10}")
    for t, idle, loaded, per in rows:
        print(f"{t.label:<52}{idle / 1024:>10.1f}{loaded / 1024:>12.1f}{per:>10.0f}")
    return rows


def soak(env, t, seconds, conns, header):
    """`seconds` at peak (wrk, -c`conns`) against `t` in 10 s slices: RSS after each."""
    port = free_port()
    proc = t.start(env, port, f"soak-{t.key}")
    t.proc, t.port = proc, port
    try:
        wait_port(port, proc, t.label)
        slice_s = 10
        samples = []
        served = 0
        for i in range(max(1, seconds // slice_s)):
            r = measure(t, slice_s, conns, header)
            served += r["requests"]
            samples.append(rss_kib(proc.pid))
            if r["bad"]:
                sys.exit(f"soak: {r['bad']} bad answers from {t.label}")
        first, last, peak = samples[0], samples[-1], max(samples)
        print(f"\nsoak: {t.label}, {len(samples) * slice_s} s at peak (wrk -c{conns}), {served} requests")
        print("RSS KiB after each 10 s: " + " ".join(str(s) for s in samples))
        print(f"RSS after the first slice {first} KiB, at the end {last} KiB, max {peak} KiB: "
              f"growth {last - first} KiB ({(last - first) * 100 / first:.1f}%)")
    finally:
        stop([proc])


# ---- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="debug build, nginx + rotagate, one short round (CI)")
    ap.add_argument("--soak", action="store_true", help="only the soak: 5 minutes at peak on rotagate, RSS growth")
    ap.add_argument("--soak-seconds", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--only", default="", help="comma-separated target keys")
    ap.add_argument("--no-memory", action="store_true", help="skip the 10,000-connection memory run")
    ap.add_argument("--no-latency", action="store_true", help="skip the fixed-rate latency run")
    ap.add_argument("--idle-connections", type=int, default=10000)
    ap.add_argument("--json", help="write the medians to this file")
    ap.add_argument("--rotagate-bin", help="use this rotagate binary instead of building one")
    ap.add_argument("--bare-bin", help="use this bare_pingora binary instead of building one")
    ap.add_argument("--baseline", metavar="BIN", help="also run rotagate's modes with this binary (A/B)")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.seconds, args.connections = 1, 1, 4
        args.no_memory = args.no_latency = True
    if not which("wrk") or not which("nginx"):
        sys.exit("wrk or nginx not found: run scripts/setup.sh")

    pool = TARGETS + (BASELINE if args.baseline else [])
    targets = [t for t in pool if (t.smoke or not args.smoke) and (not args.only or t.key in args.only.split(","))]
    if args.soak:
        targets = [t for t in TARGETS if t.key == "remint-1"]
    notes = []
    keep = []
    for t in targets:
        if t.needs and t.needs != "bare" and not which(t.needs):
            notes.append(f"{t.label}: skipped, `{t.needs}` is not installed (scripts/setup.sh --bench)")
        else:
            keep.append(t)
    targets = keep
    rotagate = args.rotagate_bin or build_rotagate(release=not args.smoke)
    bare = args.bare_bin or build_bare_pingora() if any(t.needs == "bare" for t in targets) else None

    work = tempfile.mkdtemp(prefix="rotagate-load-")
    raise_nofile(4096)
    procs = []
    try:
        up_port = free_port()
        upstream = start_upstream(work, up_port)
        procs.append(upstream)
        wait_port(up_port, upstream, "upstream nginx")
        secret = os.urandom(32).hex().encode()
        with open(os.path.join(work, "secret"), "wb") as f:
            f.write(secret)
        env = Env(work, up_port, secret, rotagate, bare, args.baseline)
        now = int(time.time())
        token = hs256(secret, {"sub": "load-test", "iat": now - 60, "exp": now + 3600})
        header = f"Cookie: session={token}"

        if args.soak:
            soak(env, targets[0], args.soak_seconds, args.connections, header)
            return

        for t in targets:
            t.port = free_port()
            t.proc = t.start(env, t.port, t.key)
            procs.append(t.proc)
        for t in targets:
            wait_port(t.port, t.proc, t.label)
            if t.prepare:
                t.header = t.prepare(t)
        check_sessions(targets, token)

        # warm every target up (pools, caches), then interleaved rounds
        for t in targets:
            wrk(f"http://127.0.0.1:{t.port}/", 1, args.connections, t.request_header(header))
        results = {t.key: [] for t in targets}
        for r in range(args.rounds):
            order = targets[r % len(targets):] + targets[: r % len(targets)]
            for t in order:
                results[t.key].append(measure(t, args.seconds, args.connections, header))

        med = {k: {m: statistics.median(x[m] for x in rs) for m in ("rps", "p50", "p99", "cpu_us", "bad")}
               for k, rs in results.items()}
        latency = None if args.no_latency else fixed_rate(targets, med, up_port, header, work, notes)
        mem = None
        if not args.no_memory:
            stop(procs[1:])  # the memory run starts its own, one at a time
            procs = procs[:1]
            mem = memory(env, [t for t in targets if t.key in ("nginx-1", "pingora-1", "rotagate-1")],
                         args.idle_connections)
        report(args, targets, med, latency, notes)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"date": time.strftime("%Y-%m-%d"), "medians": med,
                           "latency": latency,
                           "memory": [(t.key, i, l, p) for t, i, l, p in mem] if mem else None}, f, indent=1)
        bad = [t.label for t in targets if med[t.key]["bad"] > 0]
        if bad:
            sys.exit(f"non-2xx answers or socket errors from: {', '.join(bad)}")
    finally:
        stop(procs + EXTRA_PROCS)
        shutil.rmtree(work, ignore_errors=True)


def check_sessions(targets, token):
    """The session targets must really do their work: verify passes the cookie on
    without a Set-Cookie, re-mint answers one on every request."""
    for t in targets:
        if not t.session:
            continue
        probe = urllib.request.Request(f"http://127.0.0.1:{t.port}/", headers={"Cookie": f"session={token}"})
        with urllib.request.urlopen(probe) as r:
            minted = (r.headers.get("Set-Cookie") or "").startswith("session=")
        if minted != (t.session == "remint"):
            sys.exit(f"{t.label}: expected {'a' if t.session == 'remint' else 'no'} re-minted cookie")


def fixed_rate(targets, med, up_port, header, work, notes):
    """p50/p99 at half of rotagate's peak with a fixed-rate client, and what each
    proxy adds to the direct upstream's p99."""
    if not which("h2load"):
        notes.append("latency: skipped, `h2load` is not installed (scripts/setup.sh --bench: nghttp2-client)")
        return None
    peak = med.get("rotagate-1", {}).get("rps")
    if not peak:
        return None
    rate = peak / 2
    rows = {"direct": h2load_p(f"http://127.0.0.1:{up_port}/", rate, 10, 16, None, os.path.join(work, "h2-direct"))}
    for t in targets:
        if t.key in ("nginx-1", "haproxy-1", "pingora-1", "rotagate-1", "verify-1", "remint-1", "vault-1"):
            rows[t.key] = h2load_p(f"http://127.0.0.1:{t.port}/", rate, 10, 16, t.request_header(header),
                                   os.path.join(work, f"h2-{t.key}"))
    return rows


def report(args, targets, med, latency, notes):
    ng = med.get("nginx-1")
    print(f"\nloopback load, wrk -t1 -c{args.connections}, nginx upstream, {args.rounds} interleaved round(s) "
          f"x {args.seconds}s, medians ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)")
    print(f"{'target':<52}{'req/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'CPU µs/req':>12}{'bad':>6}")
    for t in targets:
        m = med[t.key]
        print(f"{t.label:<52}{m['rps']:>9.0f}{m['p50']:>8.3f}{m['p99']:>8.3f}{m['cpu_us']:>12.1f}{m['bad']:>6.0f}")
    if latency:
        d = latency["direct"]
        print(f"\nlatency at a fixed {d['rate']} req/s (half of rotagate's peak), h2load --h1 -c16, 10 s")
        print(f"{'target':<52}{'p50 ms':>8}{'p99 ms':>8}{'added p99 ms':>14}")
        label = {t.key: t.label for t in targets}
        for k, r in latency.items():
            if r:
                print(f"{label.get(k, 'upstream direct'):<52}{r['p50']:>8.3f}{r['p99']:>8.3f}{r['p99'] - d['p99']:>14.3f}")
    for n in notes:
        print(f"note: {n}")
    if ng:
        print("\nratios to nginx, 1 worker (same run)")
        print(f"{'target':<52}{'req/s':>8}{'CPU/req':>9}")
        for t in targets:
            m = med[t.key]
            print(f"{t.label:<52}{m['rps'] / ng['rps']:>8.2f}{m['cpu_us'] / ng['cpu_us']:>9.2f}")
    goals = []
    c = lambda k: med.get(k, {}).get("cpu_us")
    rps = lambda k: med.get(k, {}).get("rps")

    def goal(text, a, b, limit, higher=False):
        if a and b:
            r = a / b
            ok = r >= limit if higher else r <= limit
            goals.append(f"{text}: {r:.2f}x ({'>=' if higher else '<='} {limit}) {'met' if ok else 'NOT met'}")

    goal("rotagate pass-through CPU/req vs bare pingora", c("rotagate-1"), c("pingora-1"), 1.00)
    goal("verify CPU/req vs pass-through", c("verify-1"), c("rotagate-1"), 1.10)
    goal("re-mint CPU/req vs pass-through", c("remint-1"), c("rotagate-1"), 1.25)
    goal("2 threads CPU/req vs 1 thread", c("rotagate-2"), c("rotagate-1"), 1.10)
    goal("2 threads req/s vs nginx 2 workers", rps("rotagate-2"), rps("nginx-2"), 0.80, higher=True)
    goal("access log req/s vs without", rps("log-1"), rps("rotagate-1"), 0.95, higher=True)
    goal("moonshot: verify CPU/req vs nginx", c("verify-1"), c("nginx-1"), 1.25)
    if c("vault-1") and c("verify-1"):
        goals.append(f"vault CPU/req vs reissue verify: {c('vault-1') / c('verify-1'):.2f}x (reported)")
    if c("vault-redis-1") and c("vault-embedded-1"):
        goals.append(f"vault-redis vs vault-embedded: CPU/req {c('vault-redis-1') / c('vault-embedded-1'):.2f}x, "
                     f"req/s {rps('vault-redis-1') / rps('vault-embedded-1'):.2f}x (reported; rotagate's process only)")
    if goals:
        print("\nDESIGN §8 targets (this run)")
        for g in goals:
            print(f"  {g}")


if __name__ == "__main__":
    main()
