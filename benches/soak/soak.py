#!/usr/bin/env python3
"""A bounded soak of the release gateway: for each database (SQLite, and PostgreSQL when
reachable), a steady rate of generateContent requests at half of the gateway's saturation for
`--minutes` (default 10), with limits, metering, the ledger and the journal on. Every minute the
gateway's resident memory, the requests answered and the events stored are sampled.

It fails (exit 1) when a request is not answered 200, when an answered request has no stored
event (or one has two), or when memory grows past `--rss-growth-mib` (default 16) between the
first sample and the last. Results: benches/results/soak.md and soak.json.

Usage: benches/soak/soak.py [--minutes 10] [--backends sqlite,postgres]
Everything binds 127.0.0.1, runs for a bounded time, and is stopped at the end.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "load"))
import run as load  # noqa: E402  (the load benchmark's helpers: processes, ports, wrk, oha)

RESULTS = os.path.join(load.ROOT, "benches", "results")


def metric_sum(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.split()[-1])
    return total


def stored_events(env):
    """Metered requests the database holds for the benchmark org (from the rollups the
    dashboard reads, which the ledger updates in the events' transaction)."""
    out = load.cli(env, "usage", "--org", "bench", "--json")
    v = json.loads(out)
    return int(v["totals"]["requests"]) if "totals" in v else int(v["requests"])


def settled(env, t, within=60):
    """Events stored once every request the gateway answered is stored (or `within` passed)."""
    deadline = time.time() + within
    while True:
        answered = int(metric_sum(t.metrics_port, "tollgate_requests_total"))
        stored = stored_events(env)
        if stored >= answered or time.time() > deadline:
            return stored
        time.sleep(0.5)


def saturation(t, lua):
    r = load.run_wrk(t, load.JSON_PATH, 16, 5, lua)
    if "error" in r:
        raise RuntimeError(f"saturation run failed: {r['error']}")
    return r["rps"]


def soak(name, db_url, minutes, tmp, logs, lua, procs):
    up_port = load.start_upstream(logs, procs)
    t = load.start_tollgate(f"soak-{name}", db_url, up_port, tmp, logs)
    procs.append(t.proc)
    env, _ = load.tollgate_env(f"soak-{name}", db_url, up_port, tmp)
    sat = saturation(t, lua)
    rate = sat / 2
    warm = settled(env, t)  # the saturation run's events, all stored
    warm_requests = int(metric_sum(t.metrics_port, "tollgate_requests_total"))
    samples, result = [], {}

    def drive():
        result.update(load.run_oha(t, load.JSON_PATH, rate, minutes * 60, conns=16))

    driver = threading.Thread(target=drive)
    start = time.time()
    driver.start()
    for minute in range(1, minutes + 1):
        while time.time() < start + minute * 60 and driver.is_alive():
            time.sleep(1)
        samples.append({
            "minute": minute,
            "rss_mib": round(load.rss_mib(t.pids()), 1),
            "answered": int(metric_sum(t.metrics_port, "tollgate_requests_total")),
            "events_written": int(metric_sum(t.metrics_port, "tollgate_events_written_total")),
            "queue": int(metric_sum(t.metrics_port, "tollgate_ledger_queue_depth")),
            "dropped": int(metric_sum(t.metrics_port, "tollgate_events_dropped_total")),
        })
        print(f"soak {name}: {samples[-1]}", flush=True)
    driver.join()
    sent = result.get("requests") or 0
    stored = settled(env, t) - warm
    received = int(metric_sum(t.metrics_port, "tollgate_requests_total")) - warm_requests
    answered_200 = sent - (result.get("non_2xx") or 0)
    out = {
        "backend": name, "minutes": minutes, "saturation_rps": round(sat), "rate_rps": round(rate),
        "achieved_rps": round(result.get("rps") or 0, 1), "requests": sent,
        "non_2xx": result.get("non_2xx"), "received": received, "stored_events": stored,
        "p50_us": result.get("p50_us"), "p99_us": result.get("p99_us"),
        "rss_first_mib": samples[0]["rss_mib"], "rss_last_mib": samples[-1]["rss_mib"],
        "samples": samples,
    }
    # Every request the gateway received has one event; oha's count misses the few it abandoned
    # in flight at its deadline (answered by the gateway, not read by oha).
    out["ok"] = (out["non_2xx"] == 0 and stored == received and answered_200 <= stored <= answered_200 + 16
                 and samples[-1]["dropped"] == 0)
    return out


def report(runs, growth_bound):
    lines = [
        "# Soak", "",
        f"`make soak`, {datetime.date.today()}: a steady rate at half of the gateway's saturation, "
        "limits, metering, ledger and journal on; gateway on one core, load and fake upstream on the other.",
        f"{load.platform_line()}", "",
        "| database | minutes | rate (req/s) | requests answered (oha) | non-200 | received by the gateway | events stored | p50 | p99 | RSS first → last minute (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['backend']} | {r['minutes']} | {r['achieved_rps']} (half of {r['saturation_rps']}) | {r['requests']} "
            f"| {r['non_2xx']} | {r['received']} | {r['stored_events']} | {r['p50_us'] / 1000:.2f} ms | {r['p99_us'] / 1000:.2f} ms "
            f"| {r['rss_first_mib']} → {r['rss_last_mib']} |")
    lines += ["", f"Pass: every request answered 200, one stored event per request the gateway received "
              f"(oha does not count the few it abandons in flight at its deadline), no event dropped, "
              f"memory growth from the first to the last minute at most {growth_bound} MiB.", ""]
    for r in runs:
        lines.append(f"{r['backend']}, per minute (RSS MiB / requests answered / events written / queue): " + ", ".join(
            f"{s['rss_mib']}/{s['answered']}/{s['events_written']}/{s['queue']}" for s in r["samples"]))
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "soak.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(RESULTS, "soak.json"), "w") as f:
        json.dump(runs, f, indent=1)
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--rss-growth-mib", type=float, default=16)
    args = ap.parse_args()
    if not os.path.exists(load.OHA):
        sys.exit("soak: oha is needed (make soak installs it)")
    tmp = tempfile.mkdtemp(prefix="tollgate-soak-")
    logs = open(os.path.join(tmp, "soak.log"), "w")
    lua = os.path.join(tmp, "wrk.lua")
    with open(lua, "w") as f:
        f.write(load.WRK_LUA)
    runs, procs = [], []
    try:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                db = f"sqlite://{tmp}/soak.db"
            elif backend == "postgres":
                if not load.pg_reachable():
                    sys.exit("soak: PostgreSQL is not reachable at 127.0.0.1:5432")
                subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q",
                                "-c", "DROP DATABASE IF EXISTS tollgate_soak", "-c", "CREATE DATABASE tollgate_soak"],
                               check=True, capture_output=True, timeout=30)
                db = "postgres://postgres@127.0.0.1:5432/tollgate_soak"
            else:
                sys.exit(f"soak: unknown backend {backend}")
            runs.append(soak(backend, db, args.minutes, tmp, logs, lua, procs))
            load.stop_all(procs)
            procs.clear()
            if backend == "postgres":
                subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc",
                                "DROP DATABASE IF EXISTS tollgate_soak"], check=False, capture_output=True, timeout=30)
    finally:
        load.stop_all(procs)
    report(runs, args.rss_growth_mib)
    failed = [r for r in runs if not r["ok"] or r["rss_last_mib"] - r["rss_first_mib"] > args.rss_growth_mib]
    if failed:
        sys.exit(f"soak failed: {[r['backend'] for r in failed]}")


if __name__ == "__main__":
    main()
