#!/usr/bin/env python3
"""PostgreSQL: retention by deleting rows (the pass's primary-key windows) against dropping a
monthly partition, and what partitions cost the ledger's inserts. A scratch database holds the
real `usage_events` (from Tollgate's migrations) and a copy partitioned by month, each with
`--events` events spread over four months. Reports the database time to remove the oldest month
both ways, and microseconds per event for the ledger's insert shape (500-row INSERT … ON
CONFLICT DO NOTHING) into each. No load; the database's own time only. Results:
benches/results/partitions.md.

Usage: benches/prune/partitions.py [--events 10000000]
"""

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "load"))
import run as load  # noqa: E402

DB = "tollgate_partitions"
RESULTS = os.path.join(load.ROOT, "benches", "results")
MONTHS = ["2026-08-01", "2026-09-01", "2026-10-01", "2026-11-01", "2026-12-01"]


def psql(sql, db=DB, timeout=7200):
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-Atqc", sql],
                         check=True, capture_output=True, text=True, timeout=timeout)
    return out.stdout.strip()


def timed(sql):
    t = time.time()
    psql(sql)
    return time.time() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    args = ap.parse_args()
    n = args.events
    psql(f"DROP DATABASE IF EXISTS {DB}", db="test")
    psql(f"CREATE DATABASE {DB}", db="test")
    try:
        env, _ = load.tollgate_env("partitions", f"postgres://postgres@127.0.0.1:5432/{DB}", 0, tempfile.mkdtemp())
        load.cli(env, "migrate")
        parts = "".join(
            f"CREATE TABLE ev_part_{i} PARTITION OF ev_part FOR VALUES FROM ('{a}') TO ('{b}');"
            for i, (a, b) in enumerate(zip(MONTHS, MONTHS[1:])))
        psql("CREATE TABLE ev_part (LIKE usage_events INCLUDING DEFAULTS) PARTITION BY RANGE (occurred_at);"
             "ALTER TABLE ev_part ADD PRIMARY KEY (id, occurred_at);"
             "ALTER TABLE ev_part ADD UNIQUE (request_id, occurred_at);"
             "CREATE INDEX ON ev_part (org_id, occurred_at);"
             "CREATE INDEX ON ev_part (client_request_id) WHERE client_request_id IS NOT NULL;"
             "CREATE INDEX ON ev_part (occurred_at) WHERE priced = FALSE;" + parts)
        # n events over four months, in time order (ids follow time, as the ledger writes them).
        span = (datetime.date.fromisoformat(MONTHS[-1]) - datetime.date.fromisoformat(MONTHS[0])).days * 86400
        fill = ("INSERT INTO {t} (id, request_id, occurred_at, org_id, provider, model, operation, status) "
                f"SELECT g, 'e-' || g, timestamptz '{MONTHS[0]}' + ((g - 1)::float8 * {span} / {n}) * interval '1 second', "
                f"1 + g % 50, 'gemini', 'gemini-2.5-flash', 'generateContent', 200 FROM generate_series(1, {n}) g")
        fill_plain = timed(fill.format(t="usage_events"))
        psql("SELECT setval('usage_events_id_seq', (SELECT max(id) FROM usage_events))")
        fill_part = timed(fill.format(t="ev_part"))
        psql("VACUUM (ANALYZE) usage_events")
        psql("VACUUM (ANALYZE) ev_part")
        print(f"filled {n} events: plain {fill_plain:.0f} s, partitioned {fill_part:.0f} s", flush=True)

        # The oldest month, removed both ways.
        cutoff = MONTHS[1]
        month = int(psql(f"SELECT count(*) FROM usage_events WHERE occurred_at < '{cutoff}'"))
        steps = f"""DO $$
DECLARE after bigint := 0; last bigint; seen bigint; deleted bigint;
BEGIN
  LOOP
    SELECT max(id), count(*) INTO last, seen FROM (SELECT id FROM usage_events WHERE id > after ORDER BY id LIMIT 1000) w;
    EXIT WHEN seen = 0;
    DELETE FROM usage_events WHERE id > after AND id <= last AND occurred_at < '{cutoff}';
    GET DIAGNOSTICS deleted = ROW_COUNT;
    EXIT WHEN deleted = 0;
    after := last;
    COMMIT;
  END LOOP;
END $$"""
        delete_secs = timed(steps)
        vacuum_secs = timed("VACUUM usage_events")
        drop_secs = timed("DROP TABLE ev_part_0")
        left = int(psql(f"SELECT count(*) FROM usage_events WHERE occurred_at < '{cutoff}'"))
        print(f"oldest month ({month} events): delete {delete_secs:.1f} s + vacuum {vacuum_secs:.1f} s, "
              f"drop {drop_secs:.3f} s; left {left}", flush=True)

        # The ledger's insert shape: 200 statements of 500 rows, ON CONFLICT DO NOTHING, run by the
        # server in one DO block (one psql start, ~0.6 us/event of the figure, is not subtracted).
        def inserts(table, conflict):
            return f"""DO $$ BEGIN FOR k IN 0..199 LOOP
  INSERT INTO {table} (request_id, occurred_at, org_id, provider, model, operation, status,
    input_tokens, output_tokens, total_tokens, cost_micros)
  SELECT 'i-' || (k * 500 + g), timestamptz '2026-11-20' + (k * 500 + g) * interval '1 millisecond', 1 + g % 50,
    'gemini', 'gemini-2.5-flash', 'generateContent', 200, 10, 5, 15, 30 FROM generate_series(1, 500) g
  ON CONFLICT {conflict} DO NOTHING;
END LOOP; END $$"""
        if not psql("SELECT 1 FROM pg_class WHERE relname = 'ev_part_id_seq'"):
            psql("CREATE SEQUENCE ev_part_id_seq START 100000000; ALTER TABLE ev_part ALTER COLUMN id SET DEFAULT nextval('ev_part_id_seq')")
        per_event = {}
        for table, conflict in (("usage_events", "(request_id)"), ("ev_part", "(request_id, occurred_at)")):
            per_event[table] = timed(inserts(table, conflict)) / 100_000 * 1e6
        print(f"insert: plain {per_event['usage_events']:.1f} us/event, partitioned {per_event['ev_part']:.1f} us/event", flush=True)
    finally:
        psql(f"DROP DATABASE IF EXISTS {DB}", db="test")
    lines = ["# PostgreSQL: deleting rows or dropping a partition", "",
             f"`benches/prune/partitions.py`, {datetime.date.today()}: {n:,} events over four months, in `usage_events` "
             "(as migrated) and in a copy partitioned by month (primary key and unique `request_id` widened by "
             "`occurred_at`, the same other indexes). Database time only, no load; one run.", load.platform_line(), "",
             "| | rows deleted (`usage_events`) | partition dropped (`ev_part`) |", "|---|---|---|",
             f"| the oldest month ({month:,} events) | {delete_secs:.1f} s in 1,000-id windows, then VACUUM {vacuum_secs:.1f} s "
             f"| {drop_secs * 1000:.0f} ms |",
             f"| the ledger's inserts (200 statements of 500 rows, ON CONFLICT DO NOTHING) | {per_event['usage_events']:.1f} µs/event "
             f"| {per_event['ev_part']:.1f} µs/event |"]
    with open(os.path.join(RESULTS, "partitions.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
