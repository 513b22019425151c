#!/usr/bin/env python3
"""What each index and constraint of `usage_events` costs per stored event (issue 20).

Builds the real schema (every migration, in order) in a scratch database, fills it with
`--prefill` events, then times inserting `--rows` more in statements of `--batch` rows, once with
the schema as it is and once with each index or constraint removed. Rows are generated inside
the database (a recursive CTE on SQLite, generate_series on PostgreSQL), so the figure is the
engine's cost of storing a row, not a client's. Request ids are time-ordered, as the gateway's.

    python3 benches/events/index_cost.py [--backends sqlite,postgres] [--prefill 1000000]

Writes benches/results/index-cost.md and .json. PostgreSQL: 127.0.0.1:5432, user postgres,
database tollgate_idx (created and dropped).
"""
import argparse
import datetime
import glob
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ORGS = 100  # the events' orgs, in turn (--orgs)

# Variants: (name, what is removed, SQL run after the migrations). SQLite cannot drop a foreign
# key or a UNIQUE column constraint in place, so those variants rebuild the table from its DDL.
SQLITE_VARIANTS = [
    ("as shipped", "nothing", None),
    ("without (org_id, occurred_at)", "index usage_events_org_time", "DROP INDEX usage_events_org_time"),
    ("without request_id UNIQUE", "the unique index on request_id", ("rebuild", "request_id           TEXT NOT NULL UNIQUE", "request_id           TEXT NOT NULL")),
    ("without foreign keys", "REFERENCES on org_id and key_id", ("rebuild", "REFERENCES organizations(id) ON DELETE CASCADE", "", "REFERENCES api_keys(id) ON DELETE SET NULL", "")),
    ("without AUTOINCREMENT", "AUTOINCREMENT on id", ("rebuild", "PRIMARY KEY AUTOINCREMENT", "PRIMARY KEY")),
    ("table alone", "every index and constraint above", ("rebuild-bare",)),
]
PG_VARIANTS = [
    ("as shipped", "nothing", None),
    ("without (org_id, occurred_at)", "index usage_events_org_time", "DROP INDEX usage_events_org_time"),
    ("without request_id UNIQUE", "the unique index on request_id", "ALTER TABLE usage_events DROP CONSTRAINT usage_events_request_id_key"),
    ("table alone", "every index above but the primary key",
     "DROP INDEX usage_events_org_time; ALTER TABLE usage_events DROP CONSTRAINT usage_events_request_id_key; "
     "DROP INDEX usage_events_client_request; DROP INDEX usage_events_unpriced"),
]

COLS = ("request_id, occurred_at, org_id, key_id, provider, model, operation, status, streamed, metered, "
        "input_tokens, output_tokens, total_tokens, cost_micros, priced, upstream_latency_ms, total_latency_ms")


def sqlite_rows(start, n):
    # One statement of n rows, generated in SQLite: a time-ordered 32-hex request id, orgs in turn.
    return (f"WITH RECURSIVE s(x) AS (SELECT {start} UNION ALL SELECT x + 1 FROM s WHERE x < {start + n - 1}) "
            f"INSERT INTO usage_events ({COLS}) SELECT printf('%016x%016x', 1700000000000 + x, abs(random())), "
            f"strftime('%Y-%m-%dT%H:%M:%fZ', 1700000000 + x / 1000.0, 'unixepoch'), 1 + x % {ORGS}, 1 + x % {ORGS}, "
            "'gemini', 'gemini-2.5-flash', 'generateContent', 200, 0, 1, 12, 400, 412, 1234, 1, 300, 301 FROM s")


def pg_rows(start, n):
    return (f"INSERT INTO usage_events ({COLS}) SELECT lpad(to_hex(1700000000000 + x), 16, '0') || "
            "lpad(to_hex((random() * 9.2e18)::bigint), 16, '0'), "
            f"to_timestamp(1700000000 + x / 1000.0), 1 + x % {ORGS}, 1 + x % {ORGS}, "
            "'gemini', 'gemini-2.5-flash', 'generateContent', 200, false, true, 12, 400, 412, 1234, true, 300, 301 "
            f"FROM generate_series({start}, {start + n - 1}) x")


def sqlite_schema(conn):
    for f in sorted(glob.glob(os.path.join(ROOT, "migrations", "sqlite", "*.sql"))):
        conn.executescript(open(f).read())
    conn.execute("PRAGMA foreign_keys = ON")
    for i in range(1, ORGS + 1):
        conn.execute("INSERT INTO organizations (id, name, created_at) VALUES (?, ?, '2026-01-01')", (i, f"org{i}"))
        conn.execute("INSERT INTO api_keys (id, org_id, kind, prefix, key_hash, created_at) "
                     "VALUES (?, ?, 'app', 'tg_', ?, '2026-01-01')", (i, i, f"h{i}"))
    conn.commit()


def sqlite_apply(conn, change):
    if change is None:
        return
    if isinstance(change, str):
        conn.execute(change)
        return
    (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'usage_events'").fetchone()
    indexes = [r[0] for r in conn.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'usage_events' AND type = 'index' AND sql IS NOT NULL")]
    if change[0] == "rebuild-bare":
        for a, b in (("TEXT NOT NULL UNIQUE", "TEXT NOT NULL"), ("REFERENCES organizations(id) ON DELETE CASCADE", ""),
                     ("REFERENCES api_keys(id) ON DELETE SET NULL", ""), ("PRIMARY KEY AUTOINCREMENT", "PRIMARY KEY")):
            assert a in ddl, a
            ddl = ddl.replace(a, b)
        indexes = []
    else:
        pairs = change[1:]
        for a, b in zip(pairs[::2], pairs[1::2]):
            assert a in ddl, a
            ddl = ddl.replace(a, b)
    conn.execute("DROP TABLE usage_events")
    conn.execute(ddl)
    for sql in indexes:
        conn.execute(sql)
    conn.commit()


def run_sqlite(args, tmp):
    out = []
    for name, what, change in SQLITE_VARIANTS:
        path = os.path.join(tmp, "idx.db")
        for p in glob.glob(path + "*"):
            os.remove(p)
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        if args.checkpoint_pages:
            conn.execute(f"PRAGMA wal_autocheckpoint = {args.checkpoint_pages}")
        sqlite_schema(conn)
        sqlite_apply(conn, change)
        done = 0
        while done < args.prefill:
            n = min(50_000, args.prefill - done)
            conn.execute("BEGIN")
            conn.execute(sqlite_rows(done, n))
            conn.execute("COMMIT")
            done += n
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        per_row = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            for _ in range(args.rows // args.batch):
                conn.execute("BEGIN")
                conn.execute(sqlite_rows(done, args.batch))
                conn.execute("COMMIT")
                done += args.batch
            per_row.append((time.perf_counter() - t) / args.rows * 1e6)
        conn.close()
        out.append({"variant": name, "removed": what, "us_per_row": statistics.median(per_row), "runs": per_row})
        print(f"sqlite  {name:32s} {statistics.median(per_row):6.2f} µs/row  {per_row}", flush=True)
    return out


def psql(db, sql):
    r = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)


def run_postgres(args):
    out = []
    for name, what, change in PG_VARIANTS:
        psql("test", "DROP DATABASE IF EXISTS tollgate_idx")
        psql("test", "CREATE DATABASE tollgate_idx")
        for f in sorted(glob.glob(os.path.join(ROOT, "migrations", "postgres", "*.sql"))):
            r = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "tollgate_idx", "-q", "-v", "ON_ERROR_STOP=1", "-f", f],
                               capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise RuntimeError(f"{f}: {r.stderr}")
        psql("tollgate_idx", f"INSERT INTO organizations (id, name, created_at) SELECT i, 'org' || i, now() FROM generate_series(1, {ORGS}) i")
        if change:
            psql("tollgate_idx", change)
        done = 0
        while done < args.prefill:
            n = min(200_000, args.prefill - done)
            psql("tollgate_idx", pg_rows(done, n))
            done += n
        psql("tollgate_idx", "VACUUM ANALYZE usage_events")
        psql("tollgate_idx", "CHECKPOINT")
        per_row = []
        for _ in range(args.repeats):
            # One psql session, one transaction per batch, as the ledger does.
            stmts = []
            for _ in range(args.rows // args.batch):
                stmts.append(pg_rows(done, args.batch) + ";")
                done += args.batch
            t = time.perf_counter()
            # Without waiting for each commit's WAL flush: that cost is per transaction, not per
            # row, and on this shared disk it would drown the indexes' share.
            r = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "tollgate_idx", "-q", "-v", "ON_ERROR_STOP=1"],
                               input="\n".join(stmts), capture_output=True, text=True, timeout=3600,
                               env={**os.environ, "PGOPTIONS": "-c synchronous_commit=off"})
            el = time.perf_counter() - t
            if r.returncode != 0:
                raise RuntimeError(r.stderr)
            per_row.append(el / args.rows * 1e6)
        out.append({"variant": name, "removed": what, "us_per_row": statistics.median(per_row), "runs": per_row})
        print(f"postgres {name:32s} {statistics.median(per_row):6.2f} µs/row  {per_row}", flush=True)
    psql("test", "DROP DATABASE IF EXISTS tollgate_idx")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--prefill", type=int, default=1_000_000)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=256, help="rows per statement and transaction")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--checkpoint-pages", type=int, help="SQLite's wal_autocheckpoint (default 1000 pages)")
    ap.add_argument("--orgs", type=int, default=100, help="events of this many orgs, interleaved")
    ap.add_argument("--only", help="run only the variants whose name contains this")
    ap.add_argument("--out", default="index-cost", help="results file name under benches/results")
    args = ap.parse_args()
    global ORGS
    ORGS = args.orgs
    if args.only:
        SQLITE_VARIANTS[:] = [v for v in SQLITE_VARIANTS if args.only in v[0]]
        PG_VARIANTS[:] = [v for v in PG_VARIANTS if args.only in v[0]]
    tmp = tempfile.mkdtemp(prefix="tollgate-idx-")
    results = {}
    try:
        if "sqlite" in args.backends:
            results["sqlite"] = run_sqlite(args, tmp)
        if "postgres" in args.backends:
            results["postgres"] = run_postgres(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    lines = [f"Cost of storing one usage event, {date}, {cpu}: `benches/events/index_cost.py --prefill {args.prefill} "
             f"--rows {args.rows} --batch {args.batch} --orgs {args.orgs}"
             + (f" --checkpoint-pages {args.checkpoint_pages}" if args.checkpoint_pages else "") + "` (median of {args.repeats}; rows generated in the "
             f"database, the events of {args.orgs} orgs interleaved).", ""]
    for backend, rows in results.items():
        base = rows[0]["us_per_row"]
        lines += [f"**{backend}**", "", "| schema | µs per row | saved vs as shipped |", "|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['variant']} | {r['us_per_row']:.2f} | {base - r['us_per_row']:+.2f} |")
        lines.append("")
    md = "\n".join(lines)
    os.makedirs(os.path.join(ROOT, "benches", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "benches", "results", f"{args.out}.md"), "w") as f:
        f.write(md)
    with open(os.path.join(ROOT, "benches", "results", f"{args.out}.json"), "w") as f:
        json.dump({"date": date, "cpu": cpu, "args": vars(args), "results": results}, f, indent=2)
    print(md)


if __name__ == "__main__":
    main()
