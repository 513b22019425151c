#!/usr/bin/env python3
"""Pruning under load: a database holding `--events` (default 10,000,000) usage events past
retention, the release gateway serving a steady rate at half of its saturation, and the
background pass's code (`tollgate db prune`, on the gateway's core) deleting them meanwhile, in
turns with pauses so that noise weighs on both sides. Reports the gateway's p50/p99 with and
without the prune running, and how long the prune took. SQLite, and PostgreSQL when
reachable. Results: benches/results/prune.md.

Usage: benches/prune/prune.py [--events 10000000] [--backends sqlite,postgres] [--minutes M]
Everything binds 127.0.0.1 and stops by itself.
"""

import argparse
import datetime
import json
import shutil
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "load"))
import run as load  # noqa: E402

RESULTS = os.path.join(load.ROOT, "benches", "results")
# Turns with the prune running and stopped.
ON_SECS, OFF_SECS = 40, 10
# Every p99 is of a window this long, on both sides: a longer window more often holds one of the
# machine's rare stalls, so "on" measured over 40 s against "off" over 10 s would be biased.
WINDOW_SECS = 10
ALL_CPUS = f"0-{os.cpu_count() - 1}"


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


def old_left(name, db_url):
    """Events still past retention (the fill's, named old-…)."""
    q = "SELECT count(*) FROM usage_events WHERE request_id LIKE 'old-%'"
    if name == "sqlite":
        db = sqlite3.connect(db_url.removeprefix("sqlite://"), timeout=30)
        try:
            return db.execute(q).fetchone()[0]
        finally:
            db.close()
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "tollgate_prune", "-Atc", q],
                         check=True, capture_output=True, text=True, timeout=600)
    return int(out.stdout.strip())


def as_in_process(pid):
    """Gives the CLI's pass the weight the serving process's pass has. That one runs on a thread
    at nice 19 inside the gateway's process; the CLI runs in a session of its own, and Linux's
    autogroup shares a core between sessions before nice values count, so its nice 19 alone would
    leave it half of the gateway's core. Its session's nice (the prune is alone in it) is 19 too."""
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write("19")
    except OSError:
        pass  # no autogroup: nice values already count across processes


def shortest_slice(pid):
    """What the pass's own thread asks for (the `lowprio` crate), for another process: nice 19
    and the shortest scheduler slice (sched_setattr(2), Linux 6.12+). Returns whether it took."""
    import ctypes

    class Attr(ctypes.Structure):
        _fields_ = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32), ("flags", ctypes.c_uint64),
                    ("nice", ctypes.c_int32), ("priority", ctypes.c_uint32), ("runtime", ctypes.c_uint64),
                    ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64),
                    ("util_min", ctypes.c_uint32), ("util_max", ctypes.c_uint32)]
    attr = Attr(size=ctypes.sizeof(Attr), policy=0, nice=19, runtime=100_000)
    sched_setattr = {"x86_64": 314, "aarch64": 274}.get(os.uname().machine)
    return bool(sched_setattr) and ctypes.CDLL(None).syscall(sched_setattr, pid, ctypes.byref(attr), 0) == 0


def prune_backends():
    """The server processes of connections named `tollgate-prune` (the serving gateway's own,
    idle, pass holds one too)."""
    return set(subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "tollgate_prune", "-Atc",
                               "SELECT pid FROM pg_stat_activity WHERE application_name = 'tollgate-prune'"],
                              capture_output=True, text=True, timeout=10).stdout.split())


def is_lowest(pid):
    """Whether process `pid` runs at nice 19 with the shortest slice (0.1 ms)."""
    try:
        with open(f"/proc/{pid}/sched") as f:
            fields = {k.strip(): v.strip() for k, v in (l.split(":", 1) for l in f if ":" in l)}
        return int(fields["prio"]) == 139 and int(fields["se.slice"]) == 100_000
    except (OSError, KeyError, ValueError):
        return False


def lower_backend(before):
    """PostgreSQL only: the pass's server process (its connection is named `tollgate-prune`)
    stands for a database host of its own, which would take nothing from the gateway's machine:
    it gets the lowest priority (its autogroup too: each backend is a session of its own) and the
    shortest slice, on any core, so it runs only on time the gateway and the load leave.
    Waits up to 10 s for a connection not in `before`; returns its pids."""
    deadline = time.time() + 10
    while time.time() < deadline:
        out = prune_backends() - before
        if out:
            for pid in out:
                as_in_process(int(pid))
                subprocess.run(["taskset", "-p", "-c", ALL_CPUS, pid], capture_output=True)
                if not shortest_slice(int(pid)):
                    subprocess.run(["renice", "-n", "19", "-p", pid], capture_output=True)
            return out
        time.sleep(0.05)
    return None


def pin_postgres(cpus):
    """Moves the PostgreSQL server's processes (and the backends it forks later) to `cpus`."""
    pids = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True).stdout.split()
    pids += subprocess.run(["pgrep", "-f", "^postgres: "], capture_output=True, text=True).stdout.split()
    for pid in set(pids):
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, pid], capture_output=True)


def bench(name, db_url, n, tmp, logs, lua, procs, max_prune_secs, wrap, fast, low_server):
    env, _ = load.tollgate_env(f"prune-{name}", db_url, 0, tmp)
    load.cli(env, "migrate")
    started = time.time()
    if name == "sqlite":
        fill_sqlite(db_url.removeprefix("sqlite://"), n)
    else:
        fill_postgres(n)
        # A database in its steady state: the fill's own vacuum is not the prune's cost.
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "tollgate_prune", "-qc",
                        "VACUUM (ANALYZE) usage_events"], check=True, capture_output=True, timeout=3600)
    fill_secs = time.time() - started
    print(f"prune {name}: {n} events written in {fill_secs:.0f} s", flush=True)
    up_port = load.start_upstream(logs, procs)
    # The serving gateway's own retention pass is off (retention 0 keeps everything): pruning is
    # the CLI's, in turns, so that "off" turns really have none.
    t = load.start_tollgate(f"prune-{name}", db_url, up_port, tmp, logs,
                            extra={"TOLLGATE_LEDGER__RETENTION_DAYS": "0"})
    procs.append(t.proc)
    env, _ = load.tollgate_env(f"prune-{name}", db_url, up_port, tmp)
    # Saturation is the median of three 5 s runs: one short run on this shared VM has measured
    # anything from 2,800 to 13,000 requests/s, and half of an overestimate is no longer half.
    sat = statistics.median(load.run_wrk(t, load.JSON_PATH, 16, 5, lua)["rps"] for _ in range(3))
    rate = sat / 2
    # Pruning on and off in turns, so that the machine's own noise (a shared 2-core VM) weighs on
    # both sides alike. "On" is `tollgate db prune` at the background pass's gentle pace, on the
    # gateway's core (where the background pass runs: same code, same CPU); it is stopped at the
    # end of its turn (a killed statement is rolled back) and started again at the next.
    on, off, prune_secs, done, turns, lowered = [], [], 0.0, False, 0, 0
    off.append(p99_run(t, rate, OFF_SECS))
    while not done:
        before = prune_backends() if name == "postgres" else set()
        prune = load.spawn(wrap + ["taskset", "-c", load.PROXY_CPU, os.path.join(load.REL, "tollgate"), "db", "prune"]
                           + (["--fast"] if fast else []), logs, env)
        turn = time.time()
        turns += 1
        procs.append(prune)  # stopped with the rest if the benchmark is interrupted
        as_in_process(prune.pid)
        if name == "postgres" and low_server and not fast:  # --fast uses the CLI's own connection
            pids = lower_backend(before)
            if pids and all(is_lowest(p) for p in pids):
                lowered += 1
            else:
                print(f"prune postgres: the pass's server process was not lowered in turn {turns}", flush=True)
        for _ in range(ON_SECS // WINDOW_SECS):
            on.append(p99_run(t, rate, WINDOW_SECS))
            if prune.poll() is not None:
                break
        done = prune.poll() is not None
        prune.kill()
        prune.wait()
        procs.remove(prune)
        prune_secs += time.time() - turn
        off.append(p99_run(t, rate, OFF_SECS))
        if prune_secs >= max_prune_secs:
            break
    left = old_left(name, db_url)
    med = lambda runs, k: statistics.median(r[k] for r in runs) / 1000  # noqa: E731
    mean = lambda runs, k: statistics.mean(r[k] for r in runs) / 1000  # noqa: E731
    res = {
        "backend": name, "events": n, "fill_secs": round(fill_secs), "saturation_rps": round(sat), "rate_rps": round(rate),
        "pruned": n - left, "left": left, "prune_secs": round(prune_secs), "turns": [len(off), turns], "windows": [len(off), len(on)],
        "done": left == 0, "date": str(datetime.date.today()), "cpu": load.platform_line(),
        "wrap": " ".join(wrap), "fast": fast,
        # Turns in which the pass's server process was seen at nice 19 with the shortest slice.
        "server_lowered_turns": lowered if name == "postgres" and low_server else None,
        "server_priority": (None if name != "postgres" else "lowest" if low_server else "server's"),
        "all_secs": round(prune_secs * n / max(1, n - left)),
        "p50_ms": [round(med(x, "p50_us"), 2) for x in (off, on)],
        "p99_ms": [round(med(x, "p99_us"), 2) for x in (off, on)],
        "p99_mean_ms": [round(mean(x, "p99_us"), 2) for x in (off, on)],
        "p99_worst_ms": [round(max(r["p99_us"] for r in x) / 1000, 2) for x in (off, on)],
        "non_2xx": sum(r["non_2xx"] or 0 for r in off + on),
        # Each turn's p99 in order, to see how the run evolved (the database grows all along).
        "turn_p99_ms": {"off": [round(r["p99_us"] / 1000, 2) for r in off],
                        "on": [round(r["p99_us"] / 1000, 2) for r in on]},
    }
    res["p99_change_pct"] = round((res["p99_ms"][1] / res["p99_ms"][0] - 1) * 100, 1)
    print(f"prune {name}: {res}", flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--minutes", type=float, default=0,
                    help="stop pruning after this many minutes of turns per database (0: prune everything)")
    ap.add_argument("--postgres-minutes", type=float, default=None,
                    help="like --minutes, for PostgreSQL only (its gentle pace is ten times slower)")
    ap.add_argument("--wrap", default="", help="a command the prune runs under, for experiments (e.g. 'chrt --idle 0')")
    ap.add_argument("--fast", action="store_true", help="prune at the maintenance pace (for experiments)")
    ap.add_argument("--report", action="store_true", help="only write prune.md again from prune.json")
    ap.add_argument("--lower-server", action="store_true",
                    help="PostgreSQL: give the pass's server process the lowest priority and the shortest slice "
                         "on any core, standing for a host of its own (its rests then grow: slower)")
    args = ap.parse_args()
    if args.report:
        write_results([], args.events)
        return
    tmp = tempfile.mkdtemp(prefix="tollgate-prune-")
    logs = open(os.path.join(tmp, "prune.log"), "w")
    lua = os.path.join(tmp, "wrk.lua")
    with open(lua, "w") as f:
        f.write(load.WRK_LUA)
    runs, procs, ok = [], [], False
    try:
        for backend in args.backends.split(","):
            if backend == "sqlite":
                db = f"sqlite://{tmp}/prune.db"
            else:
                # The database server's work (the deletes happen there) on the load's core, not
                # the gateway's: in production it has a host of its own.
                pin_postgres(load.LOAD_CPU)
                subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q",
                                "-c", "DROP DATABASE IF EXISTS tollgate_prune", "-c", "CREATE DATABASE tollgate_prune"],
                               check=True, capture_output=True, timeout=60)
                db = "postgres://postgres@127.0.0.1:5432/tollgate_prune"
            runs.append(bench(backend, db, args.events, tmp, logs, lua, procs, minutes(args, backend) * 60 or float("inf"),
                              args.wrap.split(), args.fast, args.lower_server))
            write_results(runs, args.events)
            load.stop_all(procs)
            procs.clear()
            if backend == "postgres":
                pin_postgres(ALL_CPUS)
                subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc",
                                "DROP DATABASE IF EXISTS tollgate_prune"], capture_output=True, timeout=60)
        ok = True
    finally:
        load.stop_all(procs)
        if "postgres" in args.backends:
            pin_postgres(ALL_CPUS)
        logs.close()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"prune: stopped early; logs and databases left in {tmp}", flush=True)


def minutes(args, backend):
    if backend == "postgres" and args.postgres_minutes is not None:
        return args.postgres_minutes
    return args.minutes


def key(run):
    """What makes two results the same measurement: a new one replaces an old one of that key."""
    return (run["backend"], run.get("server_priority"), run["events"], run.get("wrap", ""), run.get("fast", False))


def write_results(runs, events):
    """benches/results/prune.md and prune.json: the databases done so far, and the earlier
    results of databases this run did not measure (each result carries its date)."""
    try:
        with open(os.path.join(RESULTS, "prune.json")) as f:
            earlier = [r for r in json.load(f) if key(r) not in {key(x) for x in runs}]
    except (OSError, ValueError):
        earlier = []
    runs = earlier + runs
    lines = ["# Pruning under load", "",
             "`benches/prune/prune.py`: events past retention (10,000,000 unless the row says otherwise) deleted "
             "by the background pass's code (`tollgate db prune`, 1,000 rows per statement, on the gateway's core; "
             "its pass thread at nice 19 with the shortest scheduler slice, and its session's autogroup at nice 19, "
             "so that it weighs against the gateway as the serving process's own pass does) while the gateway "
             "serves half of its saturation (the median of three 5 s `wrk` runs; gateway on one core; load, "
             "upstream and PostgreSQL on the other). Pace: on SQLite the pass deletes on its own thread and rests "
             "3 times each statement's duration; on PostgreSQL the server deletes and the pass rests 39 times. "
             "The PostgreSQL server runs on the load's core at its own priority; with `--lower-server` the pass's "
             "server process (`tollgate-prune` in `pg_stat_activity`) gets the lowest priority and the shortest "
             "slice on any core instead, standing for a host of its own. "
             "The serving gateway's own pass is off. The prune runs in turns of "
             f"{ON_SECS} s with {OFF_SECS} s stopped between them, so the machine's own noise weighs on both "
             f"sides, and latency is measured by `oha` in windows of {WINDOW_SECS} s on both sides: p50/p99 are "
             "the median of the windows' (p99: mean and worst window in brackets). A database not pruned to the end "
             "stopped after the minutes of pruning shown.", "",
             "| database | date, CPU | rate (req/s) | pruned | turns off / on (windows) | p50 off → on | p99 off → on | p99 change | non-200 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        (b, d), (mb, md), (wb, wd) = r["p99_ms"], r["p99_mean_ms"], r["p99_worst_ms"]
        pruned = (f"{r['pruned']:,} events in {r['prune_secs']} s of pruning" if r["done"] else
                  f"{r['pruned']:,} events in {r['prune_secs']} s of pruning (all {r['events']:,}: ~{r['all_secs'] / 60:.0f} min)")
        backend = r["backend"] + (" (pass's server process lowered)" if r.get("server_priority") == "lowest" else "")
        windows = r.get("windows", r["turns"])
        lines.append(f"| {backend} | {r.get('date')}, {r.get('cpu')} | {r['rate_rps']} | {pruned} "
                     f"| {r['turns'][0]} / {r['turns'][1]} ({windows[0]} / {windows[1]}) "
                     f"| {r['p50_ms'][0]} → {r['p50_ms'][1]} ms "
                     f"| {b} ({mb}, {wb}) → {d} ({md}, {wd}) ms | {r['p99_change_pct']:+} % | {r['non_2xx']} |")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "prune.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(RESULTS, "prune.json"), "w") as f:
        json.dump(runs, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
