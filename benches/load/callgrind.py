#!/usr/bin/env python3
"""Instructions per request, counted by valgrind's callgrind: stable on a noisy shared machine
where wall-clock numbers are not. Runs bare pingora (with glibc's malloc, and with mimalloc) and
Tollgate (everything on, SQLite) under callgrind in front of the benchmark's fake upstream, sends
warm-up requests, zeroes the counters, sends N sequential keep-alive requests, dumps, and prints
instructions per request with the top functions (inclusive and self) of the gateway.

Usage: benches/load/callgrind.py [--requests 2000] [--top 40] [--only tollgate|bare|bare-mimalloc] [--sse]
       [--binary PATH]
Needs the release build (make bench-load builds it) and valgrind.
"""

import argparse
import glob
import http.client
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import run  # noqa: E402  (the load benchmark's helpers)

PATH = "/v1beta/models/gemini-2.5-flash:generateContent"


SSE_PATH = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


def send(port, n, headers):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(n):
        c.request("POST", PATH, body=run.PROMPT, headers={"Content-Type": "application/json", **headers})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"status {r.status}")
    c.close()


def control(pid, flag):
    subprocess.run(["callgrind_control", flag, str(pid)], capture_output=True, timeout=120)


ALLOCATORS = {"malloc", "calloc", "realloc", "mi_malloc", "mi_calloc", "mi_realloc", "mi_zalloc", "mi_malloc_aligned"}


def allocations(dump):
    """Calls into the allocator in a callgrind dump: the `calls=` lines under a `cfn=` that names
    malloc, calloc or realloc (glibc's or mimalloc's). Names are compressed: `(id) name` defines
    an id the first time, `(id)` refers to it after."""
    names, total, target = {}, 0, None
    with open(dump) as f:
        for line in f:
            if line.startswith(("fn=", "cfn=")):
                ref = line.split("=", 1)[1].strip()
                if ref.startswith("("):
                    i, _, rest = ref.partition(")")
                    if rest.strip():
                        names[i] = rest.strip()
                    fname = names.get(i, "")
                else:
                    fname = ref
                target = fname if line.startswith("cfn=") else None
            elif line.startswith("calls=") and target is not None:
                if target.split("'")[0] in ALLOCATORS:
                    total += int(line[6:].split()[0])
                target = None
    return total


def profile(name, cmd, env, port, headers, n, top, tmp, logs):
    out = os.path.join(tmp, f"{name}.callgrind")
    vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", "--dump-instr=no", "--separate-threads=no"]
    proc = run.spawn(vg + cmd, logs, env)
    try:
        if not run.wait_port(port, 120):
            raise RuntimeError(f"{name} did not start under valgrind")
        send(port, 500, headers)  # warm-up: pools, lazy statics, caches, prepared statements
        time.sleep(1)
        control(proc.pid, "-z")
        send(port, n, headers)
        time.sleep(1)
        control(proc.pid, "-d")
        time.sleep(1)
    finally:
        os.killpg(proc.pid, 15)
        time.sleep(2)
        try:
            os.killpg(proc.pid, 9)
        except OSError:
            pass
    dumps = sorted(glob.glob(f"{out}.*"), key=os.path.getmtime)
    # The dump made by `-d` is the one with a part number (NAME.PID.1); the final one is at exit.
    parts = [d for d in dumps if d.count(".") > out.count(".") + 1] or dumps
    ann = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=yes", parts[0]], capture_output=True, text=True).stdout
    total = next((int(l.split()[0].replace(",", "")) for l in ann.splitlines() if l.strip().endswith("PROGRAM TOTALS")), 0)
    allocs = allocations(parts[0])
    # The ledger's SQLite insert runs on a background thread in batches that, under callgrind's
    # slow sequential load, hold one or two events: its share per request swings between runs
    # (36-42k), so the figure without it is the one to compare.
    insert = next((int(l.split()[0].replace(",", "")) for l in ann.splitlines() if "store::sqlite_events::EventDb::insert [" in l), 0)
    print(f"\n== {name}: {total / n:,.0f} instructions per request ({n} requests), {(total - insert) / n:,.0f} without the "
          f"ledger's SQLite insert ({insert / n:,.0f}), {allocs / n:.1f} allocations per request")
    incl = [l for l in ann.splitlines() if "(" in l and l.strip()[:1].isdigit()]
    print("-- inclusive")
    for l in incl[:top]:
        print(l[:200])
    slf = subprocess.run(["callgrind_annotate", "--threshold=100", parts[0]], capture_output=True, text=True).stdout
    print("-- self (thread and runtime entry frames, which this callgrind_annotate lists whole, left out)")
    rows = [l for l in slf.splitlines() if "(" in l and l.strip()[:1].isdigit()]
    for l in [l for l in rows if float(l.split("(")[1].split("%")[0]) < 50][:top]:
        print(l[:200])
    return total / n, allocs / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--only", choices=["tollgate", "bare", "bare-mimalloc"])
    ap.add_argument("--sse", action="store_true", help="stream 50 SSE events per request instead of the JSON answer")
    ap.add_argument("--binary", help="profile this tollgate binary instead of the release build's")
    args = ap.parse_args()
    if args.sse:
        global PATH
        PATH = SSE_PATH
    tmp = tempfile.mkdtemp(prefix="tollgate-callgrind-")
    logs = open(os.path.join(tmp, "processes.log"), "w")
    procs, results = [], {}
    try:
        up_port = run.start_upstream(logs, procs)
        if args.only in (None, "bare"):
            port = run.free_port()
            results["bare pingora"] = profile("bare", [os.path.join(run.REL, "bare-pingora"), f"127.0.0.1:{port}", f"127.0.0.1:{up_port}", *run.BARE_TUNED],
                                              {}, port, {}, args.requests, args.top, tmp, logs)
        if args.only in (None, "bare-mimalloc"):
            port = run.free_port()
            results["bare pingora (mimalloc)"] = profile("bare-mimalloc", [os.path.join(run.REL, "bare-pingora-mimalloc"), f"127.0.0.1:{port}", f"127.0.0.1:{up_port}", *run.BARE_TUNED],
                                                         {}, port, {}, args.requests, args.top, tmp, logs)
        if args.only in (None, "tollgate"):
            # One worker, as bare pingora runs (unpinned, the default would start one per core).
            env, port = run.tollgate_env("callgrind", f"sqlite://{tmp}/cg.db", up_port, tmp, {"TOLLGATE_GATEWAY__THREADS": "1"})
            key = run.tollgate_org(env)
            results["tollgate"] = profile("tollgate", [args.binary or os.path.join(run.REL, "tollgate"), "gateway"], env, port,
                                          {"x-goog-api-key": key}, args.requests, args.top, tmp, logs)
    finally:
        run.stop_all(procs)
        logs.close()
    print()
    for k, (v, a) in results.items():
        print(f"{k}: {v:,.0f} instructions/request, {a:.1f} allocations/request")
    print(f"(profiles kept in {tmp})")


if __name__ == "__main__":
    main()
