#!/usr/bin/env python3
"""Tollgate's load benchmark: the same workload against the fake upstream directly, nginx as a
plain reverse proxy, a bare pingora passthrough, Tollgate with everything on (SQLite, and
PostgreSQL when reachable), and the peers LiteLLM and Portkey when they can run here.

Targets are measured in alternation (A B C A B C ...) so machine drift cancels. Pinning: each
proxy runs alone on CPU 1 (all its threads); the load generators (wrk, oha) and the fake upstream
share CPU 0, which they do not saturate at a proxy's rate. So every proxy gets exactly one core,
and the direct row is what one core serving both wrk and the upstream reaches. PostgreSQL (a
system service) is not pinned.

Phases: requests/s and latency at fixed concurrency (wrk); latency at a fixed rate of half bare
pingora's saturation (oha, when installed); SSE and Imagen workloads with time to first event;
resident memory per in-flight stream (1,000 slow streams held open); resident memory with 10,000
orgs and 100,000 keys loaded. `--tune` instead compares bare pingora's settings (threads, work
stealing, keep-alive pool size). Results: a Markdown table and a JSON file in benches/results/.

Usage: benches/load/run.py [--duration 8] [--rounds 2] [--concurrency 1,16,64] [--quick] [--tune]
Everything binds 127.0.0.1, is bounded in time, and is stopped at the end.
"""

import argparse
import datetime
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
REL = os.path.join(ROOT, "target", "release")
BENCH = os.path.join(ROOT, ".bench")
PROMPT = '{"contents":[{"parts":[{"text":"why is the sky blue"}]}]}'
TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")
LOAD_CPU, UPSTREAM_CPU, PROXY_CPU = "0", "0", "1"
OHA = os.path.join(BENCH, "oha", "bin", "oha")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def tree(pid):
    """The pid and all its descendants."""
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    if int(fields[1]) == parent:
                        pids.append(int(d))
                        frontier.append(int(d))
                except (OSError, IndexError, ValueError):
                    pass
    return pids


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def rss_mib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Target:
    def __init__(self, name, port, headers=None, prefix="", proc=None, note=""):
        self.name, self.port, self.headers, self.prefix, self.proc, self.note = name, port, headers or {}, prefix, proc, note

    def pids(self):
        return tree(self.proc.pid) if self.proc else []


def spawn(cmd, log, env=None, cpus=None):
    if cpus:
        cmd = ["taskset", "-c", cpus] + cmd
    return subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, **(env or {})}, start_new_session=True)


WRK_LUA = r"""
wrk.method = os.getenv("WRK_METHOD") or "POST"
wrk.body = os.getenv("WRK_BODY")
wrk.headers["Content-Type"] = "application/json"
for h in string.gmatch(os.getenv("WRK_HEADERS") or "", "[^|]+") do
  local k, v = h:match("^([^:]+):%s*(.*)$")
  if k then wrk.headers[k] = v end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout))
end
"""


def run_wrk(t, path, conns, duration, lua):
    url = f"http://127.0.0.1:{t.port}{t.prefix}{path}"
    env = {"WRK_BODY": PROMPT, "WRK_HEADERS": "|".join(f"{k}: {v}" for k, v in t.headers.items())}
    pids = t.pids()
    before = cpu_ticks(pids)
    out = subprocess.run(["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s", "-s", lua, url],
                         capture_output=True, text=True, env={**os.environ, **env}, timeout=duration + 30)
    after = cpu_ticks(pids)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT")), None)
    if not line:
        return {"error": out.stdout[-500:] + out.stderr[-500:]}
    n, dur_us, p50, p90, p99, p999, status_err, sock_err, timeouts = map(int, line.split()[1:])
    return {
        "requests": n, "rps": n / (dur_us / 1e6), "p50_us": p50, "p90_us": p90, "p99_us": p99, "p999_us": p999,
        "non_2xx": status_err, "socket_errors": sock_err + timeouts,
        "cpu_us_per_req": ((after - before) * TICK_US / n) if (n and pids) else None,
        "rss_mib": rss_mib(pids) if pids else None,
    }


def first_event_ms(t, samples=20):
    """Median time to the first SSE event, sequential requests."""
    times = []
    for _ in range(samples):
        req = urllib.request.Request(f"http://127.0.0.1:{t.port}{t.prefix}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                                     data=PROMPT.encode(), headers={"Content-Type": "application/json", **t.headers}, method="POST")
        start = time.perf_counter()
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read(6)
            times.append((time.perf_counter() - start) * 1000)
            r.read()
    return statistics.median(times)


def cli(env, *args):
    out = subprocess.run([os.path.join(REL, "tollgate"), *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"tollgate {' '.join(args)}: {out.stderr}")
    return out.stdout


def tollgate_org(env):
    """Creates the benchmark org with all four limits (far above what a run uses); its key."""
    cli(env, "org", "create", "bench")
    key = json.loads(cli(env, "key", "create", "--org", "bench", "--json"))["secret"]
    for t, v in [("daily_requests", "1000000000"), ("daily_ads", "1000000000"), ("monthly_tokens", "1000000000000"), ("monthly_cost", "1000000000")]:
        cli(env, "limit", "set", "--org", "bench", "--type", t, "--value", v)
    return key


def tollgate_env(name, db_url, up_port, tmp, extra=None):
    """The environment of a benchmark gateway and its port."""
    port = free_port()
    env = {
        "TOLLGATE_DATABASE__URL": db_url,
        "TOLLGATE_GATEWAY__LISTEN": f"127.0.0.1:{port}", "TOLLGATE_METRICS__LISTEN": f"127.0.0.1:{free_port()}",
        "TOLLGATE_PROVIDERS__GEMINI__BASE_URL": f"http://127.0.0.1:{up_port}", "GEMINI_API_KEY": "bench-provider-key",
        "TOLLGATE_LEDGER__SPOOL_PATH": os.path.join(tmp, f"{name}-spool.jsonl"),
        "TOLLGATE_LIMITS__SAVED_CONFIG_PATH": os.path.join(tmp, f"{name}-live.json"),
        "TOLLGATE_PRICING__PATH": os.path.join(ROOT, "config", "pricing.toml"), "TOLLGATE_LOG__LEVEL": "info",
        **(extra or {}),
    }
    os.environ.pop("RUST_LOG", None)
    return env, port


def start_tollgate(name, db_url, up_port, tmp, logs, cpus=None, extra=None):
    env, port = tollgate_env(name, db_url, up_port, tmp, extra)
    key = tollgate_org(env)
    proc = spawn([os.path.join(REL, "tollgate"), "gateway"], logs, env, cpus or PROXY_CPU)
    if not wait_port(port):
        raise RuntimeError(f"{name} did not start")
    t = Target(name, port, {"x-goog-api-key": key}, proc=proc,
               note="identity, flags, 4 limits with reservations, metering, pricing, ledger, metrics, access log at info")
    t.metrics_port = int(env["TOLLGATE_METRICS__LISTEN"].rsplit(":", 1)[1])
    return t


def overhead_us(t):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{t.metrics_port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    s = c = 0.0
    for line in text.splitlines():
        if line.startswith("tollgate_gateway_overhead_seconds_sum"):
            s = float(line.split()[-1])
        if line.startswith("tollgate_gateway_overhead_seconds_count"):
            c = float(line.split()[-1])
    return s / c * 1e6 if c else None


def try_litellm(up_port, logs, tmp):
    exe = os.path.join(BENCH, "venv", "bin", "litellm")
    if not os.path.exists(exe):
        return None, "not installed (pip install 'litellm[proxy]' into .bench/venv failed or was not run)"
    port = free_port()
    cfg = os.path.join(tmp, "litellm.yaml")
    with open(cfg, "w") as f:
        f.write("model_list: []\ngeneral_settings: {}\n")
    # LiteLLM refuses to start without a master key; clients then present it where Google's key goes.
    env = {"GEMINI_API_BASE": f"http://127.0.0.1:{up_port}", "GEMINI_API_KEY": "bench-provider-key", "LITELLM_LOG": "ERROR",
           "LITELLM_MASTER_KEY": "sk-bench-master"}
    proc = spawn([exe, "--config", cfg, "--port", str(port), "--num_workers", "1"], logs, env, PROXY_CPU)
    if not wait_port(port, 120):
        proc.kill()
        return None, "did not start within 120 s"
    t = Target("litellm (/gemini pass-through, 1 worker)", port, {"x-goog-api-key": "sk-bench-master"}, prefix="/gemini", proc=proc)
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/gemini/v1beta/models/gemini-2.5-flash:generateContent?key=sk-bench-master",
                                     data=PROMPT.encode(), headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(req, timeout=30).read()
    except Exception as e:  # noqa: BLE001 - any failure means the peer cannot be measured
        os.killpg(proc.pid, 9)
        return None, f"pass-through request failed: {e}"
    return t, ""


def try_portkey(up_port, logs):
    entry = os.path.join(BENCH, "portkey", "node_modules", "@portkey-ai", "gateway", "build", "start-server.js")
    if not os.path.exists(entry):
        return None, "not installed (npm install @portkey-ai/gateway into .bench/portkey failed or was not run)"
    port = free_port()
    proc = spawn(["node", entry, f"--port={port}", "--headless"], logs, None, PROXY_CPU)
    if not wait_port(port, 60):
        proc.kill()
        return None, "did not start within 60 s"
    # Portkey has no /v1beta route: its pass-through is /v1/proxy/<path> to the custom host.
    headers = {"x-portkey-provider": "google", "x-portkey-custom-host": f"http://127.0.0.1:{up_port}",
               "x-goog-api-key": "bench-provider-key"}
    t = Target("portkey (/v1/proxy pass-through, custom host)", port, headers, prefix="/v1/proxy", proc=proc)
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/proxy/v1beta/models/gemini-2.5-flash:generateContent",
                                     data=PROMPT.encode(), headers={"Content-Type": "application/json", **headers}, method="POST")
        urllib.request.urlopen(req, timeout=30).read()
    except Exception as e:  # noqa: BLE001
        os.killpg(proc.pid, 9)
        return None, f"pass-through request failed: {e}"
    return t, ""


SLOW_PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&slow=24"


async def _hold_streams(t, n, hold_s):
    """Opens n slow streams (24 events, 500 ms apart), waits until each has its first event,
    samples the target's RSS while all are open, then closes them. Returns (opened, max RSS MiB)."""
    import asyncio
    body = PROMPT.encode()
    head = (f"POST {t.prefix}{SLOW_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in t.headers.items())
            + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    conns, opened = [], 0

    async def one():
        nonlocal opened
        r, w = await asyncio.open_connection("127.0.0.1", t.port)
        conns.append(w)
        w.write(head)
        await w.drain()
        seen = b""
        while b"data:" not in seen:
            chunk = await asyncio.wait_for(r.read(4096), 20)
            if not chunk:
                return
            seen += chunk
        opened += 1
        try:
            while await r.read(4096):  # keep reading the slowly arriving events
                pass
        except (ConnectionError, asyncio.CancelledError):
            pass

    tasks = []
    for i in range(n):
        tasks.append(asyncio.ensure_future(one()))
        if i % 50 == 49:
            await asyncio.sleep(0.05)
    end = time.time() + 20
    while opened < n and time.time() < end:
        await asyncio.sleep(0.2)
    peak = 0.0
    for _ in range(int(hold_s / 0.25)):
        peak = max(peak, rss_mib(t.pids()))
        await asyncio.sleep(0.25)
    for task in tasks:
        task.cancel()
    for w in conns:
        w.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    return opened, peak


def stream_memory(t, n=1000):
    """Resident memory per in-flight stream: RSS with n slow streams open minus RSS just before
    (after a warm-up of the same path), divided by n."""
    import asyncio
    asyncio.run(_hold_streams(t, 20, 1))  # warm-up: pools, buffers, the path's first use
    time.sleep(1)
    before = rss_mib(t.pids())
    opened, peak = asyncio.run(_hold_streams(t, n, 3))
    time.sleep(1)
    return {"streams": n, "opened": opened, "rss_before_mib": before, "rss_peak_mib": peak,
            "kib_per_stream": (peak - before) * 1024 / n if opened else None}


def big_config_rss(up_port, tmp, logs, orgs=10_000, keys=100_000):
    """A gateway with 10,000 orgs (four limits each) and 100,000 keys loaded: its resident memory
    once the live snapshot holds every key, and after requests from 1,000 different orgs."""
    import hashlib
    import sqlite3
    db = os.path.join(tmp, "big.db")
    env, port = tollgate_env("big", f"sqlite://{db}", up_port, tmp)
    cli(env, "org", "list")  # creates the database and applies the migrations
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    con = sqlite3.connect(db)
    con.executemany("INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?)", ((i, f"org-{i}", now) for i in range(1, orgs + 1)))
    con.executemany("INSERT INTO usage_limits (org_id, limit_type, value, alert_threshold, enabled, updated_at) VALUES (?, ?, ?, 80, 1, ?)",
                    ((i, lt, 10**12, now) for i in range(1, orgs + 1) for lt in ("daily_requests", "daily_ads", "monthly_tokens", "monthly_cost")))
    key = lambda k: f"tg_big{k:040d}"  # noqa: E731
    con.executemany("INSERT INTO api_keys (id, org_id, kind, name, prefix, key_hash, created_at) VALUES (?, ?, 'app', '', ?, ?, ?)",
                    ((k, (k - 1) % orgs + 1, key(k)[:10], hashlib.sha256(key(k).encode()).hexdigest(), now) for k in range(1, keys + 1)))
    con.commit()
    con.close()
    proc = spawn([os.path.join(REL, "tollgate"), "gateway"], logs, env, PROXY_CPU)
    metrics_port = int(env["TOLLGATE_METRICS__LISTEN"].rsplit(":", 1)[1])
    try:
        if not wait_port(port):
            return {"error": "did not start"}
        loaded, end = 0, time.time() + 60
        while loaded < keys and time.time() < end:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
                loaded = int(float(next(l.split()[-1] for l in text.splitlines() if l.startswith("tollgate_live_config_keys "))))
            except (OSError, StopIteration, ValueError):
                pass
            time.sleep(0.5)
        time.sleep(2)
        idle = rss_mib(tree(proc.pid))
        for k in range(1, keys + 1, keys // 1000):  # 1,000 requests, 1,000 different orgs
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1beta/models/gemini-2.5-flash:generateContent",
                                         data=PROMPT.encode(), headers={"Content-Type": "application/json", "x-goog-api-key": key(k)}, method="POST")
            urllib.request.urlopen(req, timeout=10).read()
        return {"orgs": orgs, "keys": keys, "keys_loaded": loaded, "rss_loaded_mib": idle, "rss_after_1000_orgs_mib": rss_mib(tree(proc.pid))}
    finally:
        os.killpg(proc.pid, 9)


def run_oha(t, path, rate, duration, conns=8):
    """Latency at a fixed request rate (oha, open-loop with latency correction)."""
    url = f"http://127.0.0.1:{t.port}{t.prefix}{path}"
    cmd = ["taskset", "-c", LOAD_CPU, OHA, "-z", f"{duration}s", "-q", str(int(rate)), "-c", str(conns), "--latency-correction",
           "--no-tui", "--output-format", "json", "-m", "POST", "-d", PROMPT, "-T", "application/json"]
    for k, v in t.headers.items():
        cmd += ["-H", f"{k}: {v}"]
    pids = t.pids()
    before = cpu_ticks(pids)
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=duration + 60)
    after = cpu_ticks(pids)
    try:
        j = json.loads(out.stdout)
    except ValueError:
        return {"error": (out.stdout + out.stderr)[-300:]}
    pct = j.get("latencyPercentiles", {})
    codes = j.get("statusCodeDistribution", {})
    n = sum(int(v) for v in codes.values())
    us = lambda k: None if pct.get(k) is None else pct[k] * 1e6  # noqa: E731
    return {"rate": rate, "requests": n, "rps": j["summary"].get("requestsPerSec"), "p50_us": us("p50"), "p90_us": us("p90"), "p99_us": us("p99"),
            "p999_us": us("p99.9"), "non_2xx": n - int(codes.get("200", 0)),
            "cpu_us_per_req": ((after - before) * TICK_US / n) if (n and pids) else None}


def pg_reachable():
    try:
        socket.create_connection(("127.0.0.1", 5432), 1).close()
        return shutil.which("psql") is not None
    except OSError:
        return False


def start_upstream(logs, procs):
    """The fake upstream, on the load generator's core; its port."""
    port = free_port()
    procs.append(spawn([os.path.join(REL, "fake-upstream"), f"127.0.0.1:{port}"], logs, cpus=UPSTREAM_CPU))
    wait_port(port)
    return port


def start_nginx(name, tmp, up_port, logs, procs):
    """nginx (Debian's) as a plain reverse proxy in front of the fake upstream, one worker."""
    port = free_port()
    tag = name.split()[0] + str(port)
    conf = os.path.join(tmp, f"nginx-{tag}.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off; worker_processes 1; pid {tmp}/nginx-{tag}.pid; error_log {tmp}/nginx-{tag}-error.log;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {tmp}/nginx-body; proxy_temp_path {tmp}/nginx-proxy;
  upstream up {{ server 127.0.0.1:{up_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://up; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_buffering off; proxy_read_timeout 60s; }} }} }}
""")
    ng = spawn(["nginx", "-c", conf], logs, cpus=PROXY_CPU)
    procs.append(ng)
    wait_port(port)
    return Target(name, port, proc=ng)


def start_upstream_and_proxies(tmp, logs, procs):
    """The fake upstream, nginx, bare pingora and Tollgate on SQLite; the targets (direct first)."""
    up_port = start_upstream(logs, procs)
    targets = [Target("direct (fake upstream)", up_port, proc=None),
               start_nginx("nginx proxy_pass (1 worker)", tmp, up_port, logs, procs)]
    bp_port = free_port()
    # Tuned as Tollgate runs (benches/results/tuning.md): one thread, no work stealing, pool 1024.
    bp = spawn([os.path.join(REL, "bare-pingora"), f"127.0.0.1:{bp_port}", f"127.0.0.1:{up_port}", *BARE_TUNED], logs, cpus=PROXY_CPU)
    procs.append(bp)
    wait_port(bp_port)
    targets.append(Target(BARE, bp_port, proc=bp))
    tg = start_tollgate("tollgate-sqlite", f"sqlite://{tmp}/bench.db", up_port, tmp, logs)
    procs.append(tg.proc)
    tg.name = TG_SQLITE
    targets.append(tg)
    return up_port, targets


BARE = "bare pingora (1 thread)"
TG_SQLITE = "tollgate, everything on (SQLite)"
TG_PG = "tollgate, everything on (PostgreSQL)"
JSON_PATH = "/v1beta/models/gemini-2.5-flash:generateContent"


def medians(runs):
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0].get("error") if runs else "no run"}
    return {k: statistics.median([r[k] for r in ok if r.get(k) is not None]) if any(r.get(k) is not None for r in ok) else None for k in ok[0]}


def stop_all(procs):
    for p in procs:
        try:
            os.killpg(p.pid, 15)
        except OSError:
            pass
    time.sleep(0.5)
    for p in procs:
        try:
            os.killpg(p.pid, 9)
        except OSError:
            pass


# bare pingora's arguments in the comparison: THREADS WORK_STEALING KEEPALIVE_POOL, the settings
# Tollgate's gateway uses (gateway/src/server.rs build_server).
BARE_TUNED = ["1", "false", "1024"]


def wrk_rounds(targets, conns, args, lua):
    """The JSON workload against each target, alternating (A B C A B C), args.rounds times."""
    runs = {t.name: [] for t in targets}
    for _ in range(args.rounds):
        for t in targets:
            runs[t.name].append(run_wrk(t, JSON_PATH, conns, args.duration, lua))
    return runs


def write_results(stem, date, args, results, lines):
    """benches/results/STEM.md (the table) and STEM-DATE.json (every figure); the table to stdout."""
    md = "\n".join(lines) + "\n"
    with open(os.path.join(ROOT, "benches", "results", f"{stem}.md"), "w") as f:
        f.write(md)
    with open(os.path.join(ROOT, "benches", "results", f"{stem}-{date}.json"), "w") as f:
        json.dump({"date": date, "args": vars(args), "results": results}, f, indent=2)
    sys.stdout.write(md)


def threads(args, tmp, logs, lua):
    """One proxy worker against two: bare pingora and Tollgate (SQLite), pinned to one core and
    free to use both. wrk and the fake upstream stay on CPU 0, so a proxy that uses both cores
    shares one of them with the load: on a 2-core machine nothing can be pinned apart from a
    two-core proxy."""
    procs = []
    both = "0,1"
    # Work stealing as Tollgate chooses it: off for one worker, on for two.
    bare = [("bare pingora, 1 thread, CPU 1", ["1", "false", "1024"], PROXY_CPU),
            ("bare pingora, 2 threads, CPU 1", ["2", "true", "1024"], PROXY_CPU),
            ("bare pingora, 2 threads, both cores", ["2", "true", "1024"], both)]
    tolls = [("tollgate, 1 thread, CPU 1", "1", PROXY_CPU),
             ("tollgate, 2 threads, CPU 1", "2", PROXY_CPU),
             ("tollgate, 1 thread, both cores", "1", both),
             ("tollgate, 2 threads, both cores", "2", both)]
    results = {}
    try:
        up_port = start_upstream(logs, procs)
        targets = []
        for name, a, cpus in bare:
            port = free_port()
            p = spawn([os.path.join(REL, "bare-pingora"), f"127.0.0.1:{port}", f"127.0.0.1:{up_port}", *a], logs, cpus=cpus)
            procs.append(p)
            wait_port(port)
            targets.append(Target(name, port, proc=p))
        for i, (name, n, cpus) in enumerate(tolls):
            t = start_tollgate(f"tollgate-t{i}", f"sqlite://{tmp}/threads-{i}.db", up_port, tmp, logs, cpus=cpus,
                               extra={"TOLLGATE_GATEWAY__THREADS": n})
            t.name = name
            procs.append(t.proc)
            targets.append(t)
        for c in (16, 64):
            runs = wrk_rounds(targets, c, args, lua)
            for t in targets:
                results.setdefault(t.name, {})[f"json_c{c}"] = medians(runs[t.name])
                pairs = [r["rps"] / b["rps"] for r, b in zip(runs[t.name], runs[bare[0][0]]) if r.get("rps") and b.get("rps")]
                results[t.name][f"json_c{c}"]["x_bare_rounds"] = pairs
    finally:
        stop_all(procs)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    lines = [f"Proxy workers, {date}, {os.cpu_count()} CPUs ({platform_line()}), `benches/load/run.py --threads --duration {args.duration} --rounds {args.rounds}`.",
             f"wrk and the fake upstream on CPU {LOAD_CPU}; \"CPU {PROXY_CPU}\": the proxy's threads pinned there; \"both cores\": not pinned. "
             "JSON workload, medians; × = each round's ratio to bare pingora with 1 thread in the same round.", "",
             "| proxy | req/s c=16 | × | CPU µs/req | p99 µs | req/s c=64 | × | CPU µs/req | p99 µs | non-2xx |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        a, b = r.get("json_c16", {}), r.get("json_c64", {})
        if "error" in a or "error" in b:
            lines.append(f"| {name} | error ||||||||| ")
            continue
        x = lambda v: f"{statistics.median(v['x_bare_rounds']):.2f}" if v.get("x_bare_rounds") else "–"  # noqa: E731
        lines.append(f"| {name} | {a['rps']:.0f} | {x(a)} | {a['cpu_us_per_req'] or 0:.1f} | {a['p99_us']:.0f} | "
                     f"{b['rps']:.0f} | {x(b)} | {b['cpu_us_per_req'] or 0:.1f} | {b['p99_us']:.0f} | {a['non_2xx'] + b['non_2xx']} |")
    write_results("threads", date, args, results, lines)


def tune(args, tmp, logs, lua):
    """bare pingora's settings, each at c=16 and c=64, alternating, medians."""
    procs = []
    variants = [("threads=1, work stealing, pool 128 (default)", ["1", "true", "128"], PROXY_CPU),
                ("threads=1, no work stealing", ["1", "false", "128"], PROXY_CPU),
                ("threads=1, keep-alive pool 16", ["1", "true", "16"], PROXY_CPU),
                ("threads=1, keep-alive pool 1024", ["1", "true", "1024"], PROXY_CPU),
                ("threads=2 on one core", ["2", "true", "128"], PROXY_CPU),
                ("threads=2, both cores (unpinned)", ["2", "true", "128"], None),
                ("threads=2, both cores, no work stealing", ["2", "false", "128"], None),
                ("threads=1, default settings, mimalloc", ["1", "true", "128"], PROXY_CPU),
                ("threads=1, no work stealing, pool 1024 (as Tollgate)", BARE_TUNED, PROXY_CPU),
                # The client-side write buffer (pingora's default 1,460 bytes): at 4 KiB a response
                # header and a ~2 KB body leave in one write instead of two.
                ("as Tollgate, client write buffer 4 KiB", BARE_TUNED + ["4096"], PROXY_CPU),
                ("as Tollgate, client write buffer 16 KiB", BARE_TUNED + ["16384"], PROXY_CPU)]
    results = {}
    try:
        up_port = start_upstream(logs, procs)
        targets = []
        for name, a, cpus in variants:
            port = free_port()
            exe = "bare-pingora-mimalloc" if "mimalloc" in name else "bare-pingora"
            p = spawn([os.path.join(REL, exe), f"127.0.0.1:{port}", f"127.0.0.1:{up_port}", *a], logs, cpus=cpus)
            procs.append(p)
            wait_port(port)
            targets.append(Target(name, port, proc=p))
        targets.append(start_nginx("nginx proxy_pass (1 worker), for reference", tmp, up_port, logs, procs))
        for c in (16, 64):
            runs = wrk_rounds(targets, c, args, lua)
            for t in targets:
                results.setdefault(t.name, {})[f"json_c{c}"] = medians(runs[t.name])
        # What a larger write buffer costs: memory per held stream (connection), as in the main run.
        for t in targets:
            if t.name.startswith("as Tollgate") or t.name.endswith("(as Tollgate)"):
                results[t.name]["streams_1000"] = stream_memory(t)
    finally:
        stop_all(procs)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    base = results[variants[0][0]]
    lines = [f"bare pingora tuning, {date}, {os.cpu_count()} CPUs ({platform_line()}), `benches/load/run.py --tune --duration {args.duration} --rounds {args.rounds}`.",
             "wrk and the fake upstream on CPU 0; pinned variants on CPU 1. JSON workload, medians.", "",
             "| variant | req/s c=16 | × default | CPU µs/req | req/s c=64 | × default | p99 µs c=64 | KiB per stream | non-2xx |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        a, b = r.get("json_c16", {}), r.get("json_c64", {})
        if "error" in a or "error" in b:
            lines.append(f"| {name} | error ||||||||")
            continue
        kib = (r.get("streams_1000") or {}).get("kib_per_stream")
        lines.append(f"| {name} | {a['rps']:.0f} | {a['rps'] / base['json_c16']['rps']:.2f} | {a['cpu_us_per_req'] or 0:.1f} | "
                     f"{b['rps']:.0f} | {b['rps'] / base['json_c64']['rps']:.2f} | {b['p99_us']:.0f} | {'–' if kib is None else f'{kib:.1f}'} | {a['non_2xx'] + b['non_2xx']} |")
    write_results("tuning", date, args, results, lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--quick", action="store_true", help="JSON workload only, one round")
    ap.add_argument("--tune", action="store_true", help="compare bare pingora's settings instead")
    ap.add_argument("--threads", action="store_true", help="one proxy worker against two, pinned and not")
    ap.add_argument("--memory", action="store_true",
                    help="only memory per held stream, each measurement in a fresh process")
    args = ap.parse_args()
    conc = [int(c) for c in args.concurrency.split(",")]
    rounds = 1 if args.quick else args.rounds
    tmp = tempfile.mkdtemp(prefix="tollgate-bench-")
    logs = open(os.path.join(tmp, "processes.log"), "w")
    with open(os.path.join(tmp, "wrk.lua"), "w") as f:
        f.write(WRK_LUA)
    lua = os.path.join(tmp, "wrk.lua")
    if args.tune:
        tune(args, tmp, logs, lua)
        return
    if args.threads:
        threads(args, tmp, logs, lua)
        return
    if args.memory:
        fresh_memory(args, tmp, logs)
        return
    procs, skipped, extra = [], {}, {}
    try:
        up_port, targets = start_upstream_and_proxies(tmp, logs, procs)
        if pg_reachable():
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q", "-c", "DROP DATABASE IF EXISTS tollgate_bench", "-c", "CREATE DATABASE tollgate_bench"],
                           capture_output=True, timeout=30)
            tp = start_tollgate("tollgate-pg", "postgres://postgres@127.0.0.1:5432/tollgate_bench", up_port, tmp, logs)
            tp.name = TG_PG
            procs.append(tp.proc)
            targets.append(tp)
        else:
            skipped[TG_PG] = "PostgreSQL is not reachable at 127.0.0.1:5432"
        for tryer, label in [(lambda: try_litellm(up_port, logs, tmp), "litellm"), (lambda: try_portkey(up_port, logs), "portkey")]:
            t, why = tryer()
            if t:
                procs.append(t.proc)
                targets.append(t)
            else:
                skipped[label] = why

        results = {t.name: {} for t in targets}
        for c in conc:
            runs = {t.name: [] for t in targets}
            for _ in range(rounds):
                for t in targets:  # alternate A B C A B C
                    runs[t.name].append(run_wrk(t, JSON_PATH, c, args.duration, lua))
            for t in targets:
                results[t.name][f"json_c{c}"] = medians(runs[t.name])
                # Each round's ratio to bare pingora's run of the same round (seconds apart), so
                # the machine's drift between rounds cancels: the table shows their median and range.
                pairs = [r["rps"] / b["rps"] for r, b in zip(runs[t.name], runs.get(BARE, []))
                         if r.get("rps") and b.get("rps")]
                if pairs and "error" not in results[t.name][f"json_c{c}"]:
                    results[t.name][f"json_c{c}"]["x_bare_rounds"] = pairs

        # Latency at a fixed rate: half of bare pingora's saturation (its c=16 rate).
        sat = (results.get(BARE, {}).get("json_c16") or {}).get("rps")
        if not os.path.exists(OHA):
            skipped["fixed-rate latency"] = f"oha is not installed at {OHA} (make bench-load installs it)"
        elif sat:
            # Half of bare pingora's saturation is the target's rate; a quarter shows what the
            # gateway adds when it is not itself near saturation.
            fixed = [t for t in targets if not t.name.startswith(("litellm", "portkey"))]
            for key, share in (("fixed_rate", 0.5), ("fixed_rate_quarter", 0.25)):
                rate = sat * share
                extra[key] = rate
                runs = {t.name: [] for t in fixed}
                for _ in range(rounds):
                    for t in fixed:
                        runs[t.name].append(run_oha(t, JSON_PATH, rate, args.duration))
                for t in fixed:
                    results[t.name][f"json_{key}"] = medians(runs[t.name])

        if not args.quick:
            for t in targets:
                r = run_wrk(t, "/v1beta/models/imagen-4.0-generate-001:predict", 16, args.duration, lua)
                results[t.name]["imagen2mb_c16"] = r
                r = run_wrk(t, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", 16, args.duration, lua)
                results[t.name]["sse50_c16"] = r
                try:
                    results[t.name]["first_event_ms"] = first_event_ms(t)
                except Exception as e:  # noqa: BLE001
                    results[t.name]["first_event_ms"] = None
                    results[t.name]["first_event_error"] = str(e)
            for t in targets:
                if t.name in (BARE, TG_SQLITE, "nginx proxy_pass (1 worker)"):
                    results[t.name]["streams_1000"] = stream_memory(t)
        for t in targets:
            if hasattr(t, "metrics_port"):
                results[t.name]["overhead_mean_us"] = overhead_us(t)
    finally:
        stop_all(procs)
    if not args.quick:
        procs = []
        try:
            extra["big_config"] = big_config_rss(start_upstream(logs, procs), tmp, logs)
        finally:
            stop_all(procs)
    logs.close()
    report(results, skipped, extra, conc, args, targets)


def report(results, skipped, extra, conc, args, targets):
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    names = [t.name for t in targets]
    base = lambda n, k: (results.get(n, {}).get(k) or {}).get("rps")  # noqa: E731
    f = lambda v, fmt="{:.0f}": "–" if v is None else fmt.format(v)  # noqa: E731
    lines = [f"Load benchmark, {date}, {os.cpu_count()} CPUs ({platform_line()}), `benches/load/run.py --duration {args.duration} --rounds {1 if args.quick else args.rounds}`.",
             f"Each proxy alone on CPU {PROXY_CPU} (all its threads); wrk, oha and the fake upstream on CPU {LOAD_CPU}; PostgreSQL unpinned. "
             "Medians over alternating rounds.", ""]
    for c in conc:
        k = f"json_c{c}"
        lines += [f"**JSON generateContent (~2 KB answer), {c} connection(s)**", "",
                  "| target | req/s | × direct | × bare pingora, per round: median (range) | p50 µs | p90 µs | p99 µs | p99.9 µs | CPU µs/req | RSS MiB | non-2xx |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        d, bp = base(names[0], k), base(BARE, k)
        for n in names:
            r = results[n].get(k, {})
            if "error" in r or not r:
                lines.append(f"| {n} | error: {str(r.get('error', ''))[:60]} |||||||||||")
                continue
            pairs = r.get("x_bare_rounds") or []
            x_bare = (f"{statistics.median(pairs):.2f} ({min(pairs):.2f}–{max(pairs):.2f})" if len(pairs) > 1
                      else f(r['rps'] / bp if bp else None, '{:.2f}'))
            lines.append(f"| {n} | {f(r['rps'])} | {f(r['rps'] / d if d else None, '{:.2f}')} | {x_bare} | "
                         f"{f(r['p50_us'])} | {f(r['p90_us'])} | {f(r['p99_us'])} | {f(r['p999_us'])} | {f(r.get('cpu_us_per_req'), '{:.1f}')} | "
                         f"{f(r.get('rss_mib'), '{:.1f}')} | {f(r['non_2xx'])} |")
        lines.append("")
    for key, what in (("fixed_rate", "half"), ("fixed_rate_quarter", "a quarter")):
        if not extra.get(key):
            continue
        bare = results.get(BARE, {}).get(f"json_{key}") or {}
        lines += [f"**JSON at a fixed {extra[key]:.0f} req/s ({what} of bare pingora's c=16 rate), oha, 8 connections, latency-corrected**", "",
                  "| target | served req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | p50 added vs bare pingora µs | p99 added vs bare pingora µs | CPU µs/req | non-2xx |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for n in names:
            r = results[n].get(f"json_{key}")
            if not r:
                continue
            if "error" in r:
                lines.append(f"| {n} | error: {str(r['error'])[:60]} |||||||||")
                continue
            add = lambda k: None if (r.get(k) is None or bare.get(k) is None) else r[k] - bare[k]  # noqa: E731
            # Below the offered rate, requests queued: the latencies measure an overload.
            served = f(r.get("rps")) + (" (overloaded)" if r.get("rps") and r["rps"] < 0.97 * extra[key] else "")
            lines.append(f"| {n} | {served} | {f(r['p50_us'])} | {f(r['p90_us'])} | {f(r['p99_us'])} | {f(r['p999_us'])} | {f(add('p50_us'), '{:+.0f}')} | "
                         f"{f(add('p99_us'), '{:+.0f}')} | {f(r.get('cpu_us_per_req'), '{:.1f}')} | {f(r['non_2xx'])} |")
        lines.append("")
    if any("sse50_c16" in results[n] for n in names):
        lines += ["**Streams and large bodies, 16 connections**", "",
                  "| target | SSE 50 events req/s | Imagen 2 MB req/s | first SSE event ms (c=1, median) | first event added vs direct ms |", "|---|---|---|---|---|"]
        direct_fe = results[names[0]].get("first_event_ms")
        for n in names:
            r = results[n]
            g = lambda k: "–" if not isinstance(r.get(k), dict) or "rps" not in r[k] else f"{r[k]['rps']:.0f}"  # noqa: E731
            fe = r.get("first_event_ms")
            lines.append(f"| {n} | {g('sse50_c16')} | {g('imagen2mb_c16')} | {f(fe, '{:.2f}')} | "
                         f"{f(None if fe is None or direct_fe is None else fe - direct_fe, '{:+.2f}')} |")
        lines.append("")
    mem = [(n, results[n]["streams_1000"]) for n in names if "streams_1000" in results[n]]
    if mem:
        lines += ["**Memory per in-flight stream: 1,000 slow SSE streams held open (24 events, 500 ms apart)**", "",
                  "| target | streams open | RSS before MiB | RSS with 1,000 open MiB | KiB per stream |", "|---|---|---|---|---|"]
        for n, m in mem:
            lines.append(f"| {n} | {m['opened']} | {f(m['rss_before_mib'], '{:.1f}')} | {f(m['rss_peak_mib'], '{:.1f}')} | {f(m['kib_per_stream'], '{:.1f}')} |")
        lines.append("")
    big = extra.get("big_config")
    if big and "error" not in big:
        lines.append(f"Tollgate with {big['orgs']:,} orgs (four limits each) and {big['keys']:,} keys loaded ({big['keys_loaded']:,} in the live snapshot): "
                     f"{big['rss_loaded_mib']:.1f} MiB resident; {big['rss_after_1000_orgs_mib']:.1f} MiB after requests from 1,000 different orgs.")
    elif big:
        lines.append(f"Large configuration: {big['error']}")
    for n in names:
        if results[n].get("overhead_mean_us") is not None:
            lines.append(f"{n}: mean gateway overhead from its own histogram {results[n]['overhead_mean_us']:.0f} µs per request.")
    for n, why in skipped.items():
        lines.append(f"Not measured: {n}: {why}.")
    md = "\n".join(lines) + "\n"
    os.makedirs(os.path.join(ROOT, "benches", "results"), exist_ok=True)
    suffix = "-quick" if args.quick else ""
    with open(os.path.join(ROOT, "benches", "results", f"latest{suffix}.md"), "w") as fh:
        fh.write(md)
    with open(os.path.join(ROOT, "benches", "results", f"load-{date}{suffix}.json"), "w") as fh:
        json.dump({"date": date, "cpus": os.cpu_count(), "machine": platform_line(), "args": vars(args), "pinning": {
            "proxy": PROXY_CPU, "load": LOAD_CPU, "upstream": UPSTREAM_CPU}, "results": results, "extra": extra, "skipped": skipped}, fh, indent=2)
    sys.stdout.write(md)


def fresh_memory(args, tmp, logs):
    """Memory per held stream with each measurement in a fresh process (the main run measures
    it in processes that already served every throughput workload, whose heap is not what a
    new one would use), alternating bare pingora, Tollgate (SQLite) and nginx over the rounds."""
    procs = []
    results = {}
    try:
        up_port = start_upstream(logs, procs)
        for rnd in range(args.rounds):
            for name in (BARE, TG_SQLITE, "nginx proxy_pass (1 worker)"):
                started = []
                if name == BARE:
                    port = free_port()
                    p = spawn([os.path.join(REL, "bare-pingora"), f"127.0.0.1:{port}", f"127.0.0.1:{up_port}", *BARE_TUNED], logs, cpus=PROXY_CPU)
                    started.append(p)
                    wait_port(port)
                    t = Target(name, port, proc=p)
                elif name == TG_SQLITE:
                    d = os.path.join(tmp, f"mem-{rnd}")
                    os.makedirs(d)
                    t = start_tollgate("tollgate-mem", f"sqlite://{d}/mem.db", up_port, d, logs)
                    started.append(t.proc)
                else:
                    t = start_nginx(name, tmp, up_port, logs, started)
                try:
                    r = stream_memory(t)
                    results.setdefault(name, []).append(r["kib_per_stream"])
                    print(f"round {rnd + 1}: {name}: {r['kib_per_stream']:.1f} KiB per stream", flush=True)
                finally:
                    stop_all(started)
    finally:
        stop_all(procs)
    lines = [f"Memory per held stream, {time.strftime('%Y-%m-%d')}, 2 CPUs ({platform_line()}), "
             f"`benches/load/run.py --memory --rounds {args.rounds}`: 1,000 slow SSE streams (24 events, "
             "500 ms apart) held open, each measurement in a fresh process (RSS with them open minus "
             "RSS just before, after a warm-up of 20), targets alternating.", "",
             "| target | KiB per stream, per round | median |", "|---|---|---|"]
    for name, v in results.items():
        v = [x for x in v if x is not None]
        med = statistics.median(v) if v else None
        lines.append(f"| {name} | {', '.join(f'{x:.1f}' for x in v)} | {med:.1f} |" if med is not None else f"| {name} | – | – |")
    out = os.path.join(ROOT, "benches", "results", "memory.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def platform_line():
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "unknown CPU")
    except OSError:
        model = "unknown CPU"
    return model


if __name__ == "__main__":
    main()
