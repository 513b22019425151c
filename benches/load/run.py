#!/usr/bin/env python3
"""Tollgate's load benchmark: the same workload against the fake upstream directly, nginx as a
plain reverse proxy, a bare pingora passthrough, Tollgate with everything on (SQLite, and
PostgreSQL when reachable), and the peers LiteLLM and Portkey when they can run here.

Targets are measured in alternation (A B C A B C ...) so machine drift cancels. wrk is pinned to
CPU 0 and the fake upstream to CPU 1; the proxies float over both CPUs (pinning a proxy onto the
upstream's core makes them fight). Results: a Markdown table and a JSON file in benches/results/.

Usage: benches/load/run.py [--duration 8] [--rounds 2] [--concurrency 1,16,64] [--quick]
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
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "10s", "-s", lua, url],
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
    proc = spawn([os.path.join(REL, "tollgate"), "gateway"], logs, env, cpus)
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
    proc = spawn([exe, "--config", cfg, "--port", str(port), "--num_workers", "1"], logs, env)
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
    proc = spawn(["node", entry, f"--port={port}", "--headless"], logs)
    if not wait_port(port, 60):
        proc.kill()
        return None, "did not start within 60 s"
    headers = {"x-portkey-provider": "google", "x-portkey-custom-host": f"http://127.0.0.1:{up_port}/v1beta",
               "x-goog-api-key": "bench-provider-key", "Authorization": "Bearer bench-provider-key"}
    t = Target("portkey (custom host)", port, headers, proc=proc)
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1beta/models/gemini-2.5-flash:generateContent",
                                     data=PROMPT.encode(), headers={"Content-Type": "application/json", **headers}, method="POST")
        urllib.request.urlopen(req, timeout=30).read()
    except Exception as e:  # noqa: BLE001
        os.killpg(proc.pid, 9)
        return None, f"pass-through request failed: {e}"
    return t, ""


def pg_reachable():
    try:
        socket.create_connection(("127.0.0.1", 5432), 1).close()
        return shutil.which("psql") is not None
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--quick", action="store_true", help="JSON workload only, one round")
    args = ap.parse_args()
    conc = [int(c) for c in args.concurrency.split(",")]
    rounds = 1 if args.quick else args.rounds
    tmp = tempfile.mkdtemp(prefix="tollgate-bench-")
    logs = open(os.path.join(tmp, "processes.log"), "w")
    with open(os.path.join(tmp, "wrk.lua"), "w") as f:
        f.write(WRK_LUA)
    lua = os.path.join(tmp, "wrk.lua")
    procs, skipped = [], {}
    try:
        up_port = free_port()
        up = spawn([os.path.join(REL, "fake-upstream"), f"127.0.0.1:{up_port}"], logs, cpus="1")
        procs.append(up)
        wait_port(up_port)
        targets = [Target("direct (fake upstream)", up_port, proc=None)]

        ng_port = free_port()
        ng_conf = os.path.join(tmp, "nginx.conf")
        with open(ng_conf, "w") as f:
            f.write(f"""daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {tmp}/nginx-body; proxy_temp_path {tmp}/nginx-proxy;
  upstream up {{ server 127.0.0.1:{up_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{ng_port}; location / {{ proxy_pass http://up; proxy_http_version 1.1;
    proxy_set_header Connection ""; proxy_buffering off; }} }} }}
""")
        ng = spawn(["nginx", "-c", ng_conf], logs)
        procs.append(ng)
        wait_port(ng_port)
        targets.append(Target("nginx proxy_pass (1 worker)", ng_port, proc=ng))

        bp_port = free_port()
        bp = spawn([os.path.join(REL, "bare-pingora"), f"127.0.0.1:{bp_port}", f"127.0.0.1:{up_port}", "1"], logs)
        procs.append(bp)
        wait_port(bp_port)
        targets.append(Target("bare pingora (1 thread)", bp_port, proc=bp))

        tg = start_tollgate("tollgate-sqlite", f"sqlite://{tmp}/bench.db", up_port, tmp, logs)
        procs.append(tg.proc)
        tg.name = "tollgate, everything on (SQLite)"
        targets.append(tg)
        if pg_reachable():
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q", "-c", "DROP DATABASE IF EXISTS tollgate_bench", "-c", "CREATE DATABASE tollgate_bench"],
                           capture_output=True, timeout=30)
            tp = start_tollgate("tollgate-pg", "postgres://postgres@127.0.0.1:5432/tollgate_bench", up_port, tmp, logs)
            tp.name = "tollgate, everything on (PostgreSQL)"
            procs.append(tp.proc)
            targets.append(tp)
        else:
            skipped["tollgate, everything on (PostgreSQL)"] = "PostgreSQL is not reachable at 127.0.0.1:5432"

        for tryer, label in [(lambda: try_litellm(up_port, logs, tmp), "litellm"), (lambda: try_portkey(up_port, logs), "portkey")]:
            t, why = tryer()
            if t:
                procs.append(t.proc)
                targets.append(t)
            else:
                skipped[label] = why

        results = {t.name: {} for t in targets}
        path = "/v1beta/models/gemini-2.5-flash:generateContent"
        for c in conc:
            runs = {t.name: [] for t in targets}
            for _ in range(rounds):
                for t in targets:  # alternate A B C A B C
                    runs[t.name].append(run_wrk(t, path, c, args.duration, lua))
            for t in targets:
                ok = [r for r in runs[t.name] if "error" not in r]
                if not ok:
                    results[t.name][f"json_c{c}"] = {"error": runs[t.name][0].get("error")}
                    continue
                med = {k: statistics.median([r[k] for r in ok if r.get(k) is not None]) if any(r.get(k) is not None for r in ok) else None
                       for k in ok[0]}
                results[t.name][f"json_c{c}"] = med
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
            if hasattr(t, "metrics_port"):
                results[t.name]["overhead_mean_us"] = overhead_us(t)
    finally:
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
        logs.close()

    report(results, skipped, conc, args, targets)


def report(results, skipped, conc, args, targets):
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    names = [t.name for t in targets]
    base = lambda n, k: (results.get(n, {}).get(k) or {}).get("rps")  # noqa: E731
    lines = [f"Load benchmark, {date}, {os.cpu_count()} CPUs ({platform_line()}), `benches/load/run.py --duration {args.duration} --rounds {1 if args.quick else args.rounds}`.",
             "wrk pinned to CPU 0, fake upstream to CPU 1, proxies unpinned; medians over alternating rounds.", ""]
    for c in conc:
        k = f"json_c{c}"
        lines += [f"**JSON generateContent (~2 KB answer), {c} connection(s)**", "",
                  "| target | req/s | × direct | × bare pingora | p50 µs | p90 µs | p99 µs | p99.9 µs | CPU µs/req | RSS MiB | non-2xx |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        d, bp = base(names[0], k), base("bare pingora (1 thread)", k)
        for n in names:
            r = results[n].get(k, {})
            if "error" in r or not r:
                lines.append(f"| {n} | error: {str(r.get('error', ''))[:60]} |||||||||||")
                continue
            f = lambda v, fmt="{:.0f}": "–" if v is None else fmt.format(v)  # noqa: E731
            lines.append(f"| {n} | {f(r['rps'])} | {f(r['rps'] / d if d else None, '{:.2f}')} | {f(r['rps'] / bp if bp else None, '{:.2f}')} | "
                         f"{f(r['p50_us'])} | {f(r['p90_us'])} | {f(r['p99_us'])} | {f(r['p999_us'])} | {f(r.get('cpu_us_per_req'), '{:.1f}')} | "
                         f"{f(r.get('rss_mib'), '{:.1f}')} | {r['non_2xx']} |")
        lines.append("")
    if any("sse50_c16" in results[n] for n in names):
        lines += ["**Streams and large bodies, 16 connections**", "",
                  "| target | SSE 50 events req/s | Imagen 2 MB req/s | first SSE event ms (c=1, median) |", "|---|---|---|---|"]
        for n in names:
            r = results[n]
            g = lambda k: "–" if not isinstance(r.get(k), dict) or "rps" not in r[k] else f"{r[k]['rps']:.0f}"  # noqa: E731
            fe = r.get("first_event_ms")
            lines.append(f"| {n} | {g('sse50_c16')} | {g('imagen2mb_c16')} | {'–' if fe is None else f'{fe:.2f}'} |")
        lines.append("")
    for n in names:
        if results[n].get("overhead_mean_us") is not None:
            lines.append(f"{n}: mean gateway overhead from its own histogram {results[n]['overhead_mean_us']:.0f} µs per request.")
    for n, why in skipped.items():
        lines.append(f"Not measured: {n}: {why}.")
    md = "\n".join(lines) + "\n"
    os.makedirs(os.path.join(ROOT, "benches", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benches", "results", "latest.md"), "w") as f:
        f.write(md)
    with open(os.path.join(ROOT, "benches", "results", f"load-{date}.json"), "w") as f:
        json.dump({"date": date, "cpus": os.cpu_count(), "machine": platform_line(), "args": vars(args), "results": results, "skipped": skipped}, f, indent=2)
    sys.stdout.write(md)


def platform_line():
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "unknown CPU")
    except OSError:
        model = "unknown CPU"
    return model


if __name__ == "__main__":
    main()
