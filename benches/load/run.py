#!/usr/bin/env python3
"""End-to-end load comparison on loopback, all in one run.

Starts a fixed upstream (nginx answering a constant 200), nginx as a plain reverse
proxy in front of it (upstream keepalive), and rotagate in front of it twice: pass-through
(no session work) and rotating the session cookie on every request. Then drives each
with wrk for several rounds and prints requests/s and p50/p99 latency (medians of the
rounds) and the ratios DESIGN §8 targets. Nothing is asserted: 2 shared cores are noisy.

    python3 benches/load/run.py                 # release build, 3 rounds of 5 s
    python3 benches/load/run.py --smoke         # debug build, 1 short round (CI)
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


def nginx_bin():
    for p in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if p and os.path.exists(p):
            return p
    sys.exit("nginx not found: run scripts/setup.sh")


def start_nginx(workdir, name, server_block):
    d = os.path.join(workdir, name)
    os.makedirs(os.path.join(d, "logs"), exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections 4096; }}
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
    return subprocess.Popen([nginx_bin(), "-c", conf, "-p", d], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def hs256(secret, claims):
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def wrk(url, seconds, conns, header=None):
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", url]
    if header:
        cmd[1:1] = ["-H", header]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def lat(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v if unit == "ms" else v * 1000

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": lat("50"), "p99": lat("99"), "non2xx": int(errors.group(1)) if errors else 0}


def cpu_seconds(proc):
    """utime + stime of a process so far, in seconds (Linux /proc)."""
    with open(f"/proc/{proc.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_redis(work):
    """A redis-server of its own for the `vault-redis` target (AOF, fsync every second,
    noeviction: the README's recommended setting). Returns (process, port)."""
    port = free_port()
    d = os.path.join(work, "redis")
    os.makedirs(d, exist_ok=True)
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", d,
                             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
                             "--maxmemory-policy", "noeviction"], stdout=subprocess.DEVNULL)
    wait_port(port, proc, "redis-server")
    return proc, port


def start_vault(binary, work, up_port, threads, env, store="memory", name="vault"):
    """The `vault` target: rotagate in vault mode (memory store) with one live family.

    The fixed upstream cannot log anyone in, so the family is made by adoption: one
    request carrying the captured cookie `sid` gets the handle, and every wrk request
    then presents that handle (verify + store read + credential decrypt + inject; no
    rotation within `rotate_every`). Returns (process, port, wrk header)."""
    import urllib.request
    port = free_port()
    with open(os.path.join(work, "vault.key"), "wb") as f:
        f.write(os.urandom(32).hex().encode())
    path = os.path.join(work, f"rotagate-{name}.toml")
    store_keys = f'store = "{store}"\n'
    if store == "embedded":
        store_keys += f'store_path = "{work}/{name}.redb"\n'
    with open(path, "w") as f:
        f.write(f'[listen]\naddress = "127.0.0.1:{port}"\n{threads}[upstream]\nurl = "http://127.0.0.1:{up_port}"\n'
                + '[session]\nmode = "vault"\nrotate_every = "1h"\nidle_timeout = "1h"\n' + store_keys
                + f'[session.vault]\ncapture = ["sid"]\nsecrets = ["file:{work}/vault.key"]\n'
                + '[[route]]\nname = "app"\nmatch = "/:path*"\n')
    proc = subprocess.Popen([binary, "run", "-c", path], stdout=subprocess.DEVNULL, env=env)
    wait_port(port, proc, "rotagate (vault)")
    probe = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Cookie": "sid=load-test-session"})
    with urllib.request.urlopen(probe) as r:
        handle = next((c.split(";")[0] for c in r.headers.get_all("Set-Cookie") or [] if c.startswith("rg=")), None)
    if not handle:
        sys.exit("the vault rotagate did not hand out a handle")
    return proc, port, f"Cookie: {handle}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="debug build, one short round: checks the script works")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="rotagate worker threads (0: one per core)")
    args = ap.parse_args()
    if args.smoke:
        args.rounds, args.seconds, args.connections = 1, 1, 4
        subprocess.run(["cargo", "build", "--quiet", "--bin", "rotagate"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "debug", "rotagate")
    else:
        subprocess.run(["cargo", "build", "--quiet", "--release", "--bin", "rotagate"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "rotagate")
    if not shutil.which("wrk"):
        sys.exit("wrk not found: run scripts/setup.sh")

    work = tempfile.mkdtemp(prefix="rotagate-load-")
    procs = []
    try:
        up_port, ngx_port, rg_pass_port, rg_rot_port = (free_port() for _ in range(4))
        procs.append(start_nginx(work, "upstream", f"""
  server {{ listen 127.0.0.1:{up_port}; keepalive_requests 1000000;
    location / {{ default_type text/plain; return 200 "hello from the fixed upstream\\n"; }} }}"""))
        procs.append(start_nginx(work, "proxy", f"""
  upstream app {{ server 127.0.0.1:{up_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{ngx_port}; keepalive_requests 1000000;
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; }} }}"""))

        secret = os.urandom(32).hex().encode()
        with open(os.path.join(work, "secret"), "wb") as f:
            f.write(secret)
        threads = f"threads = {args.threads}\n" if args.threads else ""
        base = f'[upstream]\nurl = "http://127.0.0.1:{up_port}"\n'
        configs = {
            rg_pass_port: f'[listen]\naddress = "127.0.0.1:{rg_pass_port}"\n{threads}{base}',
            rg_rot_port: f'[listen]\naddress = "127.0.0.1:{rg_rot_port}"\n{threads}{base}'
            + '[session]\nmode = "reissue"\nrotate_every = "0s"\n'
            + '[session.reissue]\ncookie = "session"\nformat = "jwt"\n'
            + f'[[session.reissue.keys]]\nalg = "HS256"\nsecret = "file:{work}/secret"\n'
            + '[[route]]\nname = "app"\nmatch = "/:path*"\n',
        }
        for port, text in configs.items():
            path = os.path.join(work, f"rotagate-{port}.toml")
            with open(path, "w") as f:
                f.write(text)
            # access lines off, as nginx's access_log is off here
            env = dict(os.environ, RUST_LOG="warn,pingora_core::connectors=off")
            procs.append(subprocess.Popen([binary, "run", "-c", path], stdout=subprocess.DEVNULL, env=env))
        for port, what in [(up_port, "upstream nginx"), (ngx_port, "proxy nginx"), (rg_pass_port, "rotagate"), (rg_rot_port, "rotagate (rotating)")]:
            wait_port(port, procs[0] if port == up_port else procs[-1], what)

        now = int(time.time())
        token = hs256(secret, {"sub": "load-test", "iat": now - 60, "exp": now + 3600})
        cookie = f"Cookie: session={token}"
        # the rotating target must really rotate: one request, one Set-Cookie
        import urllib.request
        probe = urllib.request.Request(f"http://127.0.0.1:{rg_rot_port}/", headers={"Cookie": f"session={token}"})
        with urllib.request.urlopen(probe) as r:
            if not (r.headers.get("Set-Cookie") or "").startswith("session="):
                sys.exit("the rotating rotagate did not re-mint the session cookie")
        rot_proc = procs[-1]
        env = dict(os.environ, RUST_LOG="warn,pingora_core::connectors=off")
        vault_proc, vault_port, vault_cookie = start_vault(binary, work, up_port, threads, env)
        procs.append(vault_proc)
        # vault-redis vs vault-embedded: the same adopted family, the store differs
        emb_proc, emb_port, emb_cookie = start_vault(binary, work, up_port, threads, env, "embedded", "vault-embedded")
        procs.append(emb_proc)
        redis_proc, redis_port = start_redis(work)
        procs.append(redis_proc)
        vr_proc, vr_port, vr_cookie = start_vault(binary, work, up_port, threads, env,
                                                  f"redis://127.0.0.1:{redis_port}/0", "vault-redis")
        procs.append(vr_proc)
        targets = [
            ("direct upstream", f"http://127.0.0.1:{up_port}/", None),
            ("nginx pass-through", f"http://127.0.0.1:{ngx_port}/", None),
            ("rotagate pass-through", f"http://127.0.0.1:{rg_pass_port}/", None),
            ("rotagate rotating", f"http://127.0.0.1:{rg_rot_port}/", cookie),
            ("rotagate vault", f"http://127.0.0.1:{vault_port}/", vault_cookie),
            ("rotagate vault-embedded", f"http://127.0.0.1:{emb_port}/", emb_cookie),
            ("rotagate vault-redis", f"http://127.0.0.1:{vr_port}/", vr_cookie),
        ]
        # CPU per request of the proxy process itself (utime+stime over its own runs)
        cpu_of = {"rotagate rotating": rot_proc, "rotagate vault": vault_proc,
                  "rotagate vault-embedded": emb_proc, "rotagate vault-redis": vr_proc}
        cpu = {n: [0.0, 0.0] for n in cpu_of}
        results = {name: [] for name, _, _ in targets}
        for _ in range(args.rounds):
            for name, url, header in targets:
                before = cpu_seconds(cpu_of[name]) if name in cpu_of else 0.0
                r = wrk(url, args.seconds, args.connections, header)
                results[name].append(r)
                if name in cpu_of:
                    cpu[name][0] += cpu_seconds(cpu_of[name]) - before
                    cpu[name][1] += r["rps"] * args.seconds

        med = {n: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99", "non2xx")} for n, rs in results.items()}
        print(f"\nloopback load, wrk -t1 -c{args.connections}, {args.rounds} round(s) x {args.seconds}s, medians")
        print(f"{'target':<24}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
        for n, m in med.items():
            print(f"{n:<24}{m['rps']:>12.0f}{m['p50']:>10.3f}{m['p99']:>10.3f}{m['non2xx']:>10.0f}")
        r_pass = med["rotagate pass-through"]["rps"] / med["nginx pass-through"]["rps"]
        r_rot = med["rotagate rotating"]["rps"] / med["rotagate pass-through"]["rps"]
        print(f"\nrotagate pass-through / nginx pass-through: {r_pass:.2f}x (target >= 1.0)")
        print(f"rotagate rotating / rotagate pass-through:  {r_rot:.2f}x (target >= 0.85)")
        per = {n: (c / reqs * 1e6 if reqs else 0.0) for n, (c, reqs) in cpu.items()}
        print(f"CPU per request: reissue rotating {per['rotagate rotating']:.1f} us, vault (memory store) {per['rotagate vault']:.1f} us")
        print(f"vault-redis vs vault-embedded: {med['rotagate vault-redis']['rps']:.0f} vs {med['rotagate vault-embedded']['rps']:.0f} req/s, "
              f"CPU per request {per['rotagate vault-redis']:.1f} vs {per['rotagate vault-embedded']:.1f} us (rotagate process only)")
        bad = [n for n, m in med.items() if m["non2xx"] > 0]
        if bad:
            sys.exit(f"non-2xx answers from: {', '.join(bad)}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
