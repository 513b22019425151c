#!/usr/bin/env python3
"""Pruning under load: a database holding `--events` (default 10,000,000) usage events past
retention, the release gateway serving a steady rate at half of its saturation, and
`tollgate db prune` deleting them (1,000 rows per statement) meanwhile. Reports the gateway's
p99 before and during the prune, and how long the prune took. SQLite, and PostgreSQL when
reachable. Results: benches/results/prune.md.

Usage: benches/prune/prune.py [--events 10000000] [--backends sqlite,postgres]
Everything binds 127.0.0.1 and stops by itself.
"""

import argparse
import datetime
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "load"))
import run as load  # noqa: E402

RESULTS = os.path.join(load.ROOT, "benches", "results")
CHUNK_SECS = 20


def fill_sqlite(path, n):
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=100)
    batch = 100_000
    for start in range(0, n, batch):
        rows = [(f"old-{i:010d}", (old - datetime.timedelta(seconds=i)).isoformat(timespec="seconds"))
                for i in range(start, min(n, start + batch))]
        db.executemany("INSERT INTO usage_events (request_id, occurred_at, provider, model, operation, status) "
                       "VALUES (?, ?, 'gemini', 'gemini-2.5-flash', 'generateContent', 200)", rows)
        db.commit()
    db.close()


def fill_postgres(n):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "tollgate_prune", "-qc",
                    "INSERT INTO usage_events (request_id, occurred_at, provider, model, operation, status) "
                    f"SELECT 'old-' || g, now() - interval '100 days' - g * interval '1 second', 'gemini', "
                    f"'gemini-2.5-flash', 'generateContent', 200 FROM generate_series(1, {n}) g"],
                   check=True, capture_output=True, timeout=3600)


def p99_run(t, rate, secs):
    r = load.run_oha(t, load.JSON_PATH, rate, secs, conns=16)
    if "error" in r:
        raise RuntimeError(r["error"])
    return r


def bench(name, db_url, n, tmp, logs, lua, procs):
    env, _ = load.tollgate_env(f"prune-{name}", db_url, 0, tmp)
    load.cli(env, "migrate")
    started = time.time()
    if name == "sqlite":
        fill_sqlite(db_url.removeprefix("sqlite://"), n)
    else:
        fill_postgres(n)
    fill_secs = time.time() - started
    print(f"prune {name}: {n} events written in {fill_secs:.0f} s", flush=True)
    up_port = load.start_upstream(logs, procs)
    t = load.start_tollgate(f"prune-{name}", db_url, up_port, tmp, logs)
    procs.append(t.proc)
    env, _ = load.tollgate_env(f"prune-{name}", db_url, up_port, tmp)
    sat = load.run_wrk(t, load.JSON_PATH, 16, 5, lua)["rps"]
    rate = sat / 2
    before = [p99_run(t, rate, CHUNK_SECS) for _ in range(2)]
    prune = load.spawn(["taskset", "-c", load.LOAD_CPU, os.path.join(load.REL, "tollgate"), "--json", "db", "prune"],
                       subprocess.PIPE, env)
    prune_started = time.time()
    during = []
    while prune.poll() is None:
        during.append(p99_run(t, rate, CHUNK_SECS))
    prune_secs = time.time() - prune_started
    out = json.loads(prune.stdout.read() or b"{}") if prune.stdout else {}
    after = [p99_run(t, rate, CHUNK_SECS)]
    p99 = lambda runs: max(r["p99_us"] for r in runs) / 1000  # noqa: E731
    p50 = lambda runs: max(r["p50_us"] for r in runs) / 1000  # noqa: E731
    res = {
        "backend": name, "events": n, "fill_secs": round(fill_secs), "saturation_rps": round(sat), "rate_rps": round(rate),
        "pruned": out.get("events"), "prune_secs": round(prune_secs, 1),
        "p50_before_ms": round(p50(before), 2), "p99_before_ms": round(p99(before), 2),
        "p50_during_ms": round(p50(during), 2), "p99_during_ms": round(p99(during), 2),
        "p99_after_ms": round(p99(after), 2),
        "non_2xx": sum(r["non_2xx"] or 0 for r in before + during + after),
        "chunks_during": len(during),
    }
    print(f"prune {name}: {res}", flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--backends", default="sqlite,postgres")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="tollgate-prune-")
    logs = open(os.path.join(tmp, "prune.log"), "w")
    lua = os.path.join(tmp, "wrk.lua")
    with open(lua, "w") as f:
        f.write(load.WRK_LUA)
    runs, procs = [], []
    try:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                db = f"sqlite://{tmp}/prune.db"
            else:
                subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q",
                                "-c", "DROP DATABASE IF EXISTS tollgate_prune", "-c", "CREATE DATABASE tollgate_prune"],
                               check=True, capture_output=True, timeout=60)
                db = "postgres://postgres@127.0.0.1:5432/tollgate_prune"
            runs.append(bench(backend, db, args.events, tmp, logs, lua, procs))
            load.stop_all(procs)
            procs.clear()
            if backend == "postgres":
                subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc",
                                "DROP DATABASE IF EXISTS tollgate_prune"], capture_output=True, timeout=60)
    finally:
        load.stop_all(procs)
    lines = ["# Pruning under load", "",
             f"`benches/prune/prune.py`, {datetime.date.today()}: {args.events:,} events past retention deleted by "
             "`tollgate db prune` (1,000 rows per statement, 20 ms apart) while the gateway serves half of its "
             f"saturation (gateway on one core; load, upstream and the prune on the other). p50/p99 are the worst "
             f"{CHUNK_SECS}-second oha run of each phase.", load.platform_line(), "",
             "| database | rate (req/s) | prune | p50 before → during | p99 before → during → after | non-200 |",
             "|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['backend']} | {r['rate_rps']} | {r['pruned']:,} events in {r['prune_secs']} s "
                     f"| {r['p50_before_ms']} → {r['p50_during_ms']} ms "
                     f"| {r['p99_before_ms']} → {r['p99_during_ms']} → {r['p99_after_ms']} ms | {r['non_2xx']} |")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "prune.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(RESULTS, "prune.json"), "w") as f:
        json.dump(runs, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
