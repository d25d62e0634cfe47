"""Ingest throughput: 1,000,000 points through tracker.client into a live server (gunicorn, real HTTP).

    .venv/bin/python bench/ingest_bench.py [--points 1000000] [--db sqlite|postgres|both] [--batch-size N]

Each database gets a throwaway data dir (and, for PostgreSQL, a throwaway
cluster made with initdb on a free port). Baselines measured in the same run:
raw sqlite3 `executemany` of the same rows into a table with the same index
(the reference for any SQLite store). Prints a markdown table; CPU seconds are
given next to wall seconds because this machine is shared (wall time inflates
under load), and the server's CPU cost per point is compared with raw
executemany's. The client sends packed batches (application/vnd.torchlight.points)
of --batch-size points.
"""

import argparse
import json
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PY = sys.executable

from tracker.client.sender import DEFAULT_BATCH  # noqa: E402 (after the path insert)

SETUP = """
import django, os
django.setup()
from django.contrib.auth import get_user_model
from tracker.models import ApiToken, Role, Workspace
user = get_user_model().objects.create_user("bench", password="bench-password-123")
ws = Workspace.objects.create(name="Bench", slug="bench")
ws.add_member(user, Role.OWNER)
print(ApiToken.mint(user, "bench")[1])
"""


# One point per call, as MLflow's log_metric stores it: the store's share of that request.
SINGLE = """
import django, os, sys, time
django.setup()
from django.contrib.auth import get_user_model
from tracker import metric_store
from tracker.models import Experiment, Role, Run, Workspace
user = get_user_model().objects.create_user("single", password="bench-password-123")
ws = Workspace.objects.create(name="Single", slug="single")
ws.add_member(user, Role.OWNER)
run = Run.objects.create(experiment=Experiment.objects.create(workspace=ws, name="s"), name="s", created_by=user)
n = int(sys.argv[1])
metric_store.ingest(run, [{"key": "loss", "value": 1.0, "step": 0}])
t0, c0 = time.perf_counter(), time.process_time()
for step in range(1, n + 1):
    metric_store.ingest(run, [{"key": "loss", "value": 1.0 / step, "step": step, "timestamp": 1.7e9 + step}])
print((time.perf_counter() - t0) / n * 1000, (time.process_time() - c0) / n * 1000)
"""


def single_point_ms(kind, n=2000):
    """(wall ms, CPU ms) of metric_store.ingest of one point on an existing series, in-process."""
    root = Path(tempfile.mkdtemp(prefix=f"tl-single-{kind}-"))
    env = dict(os.environ, TORCHLIGHT_DATA_DIR=str(root / "data"), DJANGO_SETTINGS_MODULE="config.settings")
    env.pop("DATABASE_URL", None)
    pg = None
    try:
        if kind == "postgres":
            pg, env["DATABASE_URL"] = start_postgres(root)
        subprocess.run([PY, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True)
        out = subprocess.run([PY, "-c", SINGLE, str(n)], cwd=REPO, env=env, check=True, capture_output=True,
                             text=True).stdout.split()
        return float(out[-2]), float(out[-1])
    finally:
        if pg is not None:
            stop_postgres(pg)
        shutil.rmtree(root, ignore_errors=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server did not answer at {url}")


def _as_postgres_user():
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    if os.geteuid() != 0:
        return [], None
    import pwd

    pw = pwd.getpwnam("postgres")
    return ["runuser", "-u", "postgres", "--"], pw


def start_postgres(root):
    prefix, pw = _as_postgres_user()
    pgroot = Path(tempfile.mkdtemp(prefix="tl-pg-"))
    if pw is not None:
        os.chown(pgroot, pw.pw_uid, pw.pw_gid)
    data = pgroot / "data"
    port = free_port()
    subprocess.run([*prefix, "initdb", "-D", str(data), "-U", "bench", "--auth=trust"], check=True,
                   capture_output=True)
    subprocess.run(
        [*prefix, "pg_ctl", "-D", str(data), "-o", f"-p {port} -k {pgroot} -c listen_addresses=127.0.0.1", "-l",
         str(pgroot / "pg.log"), "-w", "start"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "bench", "torchlight"], check=True)
    return (prefix, data, pgroot), f"postgres://bench@127.0.0.1:{port}/torchlight"


def stop_postgres(handle):
    prefix, data, pgroot = handle
    subprocess.run([*prefix, "pg_ctl", "-D", str(data), "-m", "fast", "stop"], capture_output=True)
    shutil.rmtree(pgroot, ignore_errors=True)


def raw_sqlite_rate(n):
    path = Path(tempfile.mkdtemp()) / "raw.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY AUTOINCREMENT, series_id INT, step INT, value REAL, "
                 "timestamp REAL, epoch REAL)")
    conn.execute("CREATE INDEX p_s ON p (series_id, step)")
    rows = [(1, i, math.sin(i / 1000), 1.7e9 + i, None) for i in range(n)]
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, n, 10_000):
        conn.executemany("INSERT INTO p (series_id, step, value, timestamp, epoch) VALUES (?, ?, ?, ?, ?)",
                         rows[i : i + 10_000])
        conn.commit()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    conn.close()
    shutil.rmtree(path.parent)
    return n / wall, n / cpu


def bench_db(kind, n, batch_size):
    root = Path(tempfile.mkdtemp(prefix=f"tl-ingest-{kind}-"))
    env = dict(os.environ, TORCHLIGHT_DATA_DIR=str(root / "data"), DJANGO_SETTINGS_MODULE="config.settings")
    env.pop("DATABASE_URL", None)
    pg = None
    if kind == "postgres":
        pg, url = start_postgres(root)
        env["DATABASE_URL"] = url
    server = None
    try:
        subprocess.run([PY, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True)
        token = subprocess.run([PY, "-c", SETUP], cwd=REPO, env=env, check=True, capture_output=True,
                               text=True).stdout.strip().splitlines()[-1]
        port = free_port()
        server = subprocess.Popen(
            [PY, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1",
             "--threads", "2", "--timeout", "300"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/api/v1/schema")
        import tracker.client as tl

        spool = root / "spool"
        server_cpu0 = _cpu_of(server.pid)
        db_pid = int((pg[1] / "postmaster.pid").read_text().split()[0]) if pg else None
        db_cpu0 = _cpu_of(db_pid) if db_pid else 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        run = tl.start_run(experiment="bench", name=f"ingest-{kind}", url=base, token=token, spool_dir=spool,
                           max_buffer=2_000_000, batch_size=batch_size)
        log = run.log_metric
        for step in range(n):
            log("loss", math.sin(step / 1000), step)
        logged = time.perf_counter() - t0
        run.finish("completed", timeout=900)
        wall = time.perf_counter() - t0
        client_cpu = time.process_time() - c0
        server_cpu = _cpu_of(server.pid) - server_cpu0
        db_cpu = _cpu_of(db_pid) - db_cpu0 if db_pid else None
        tl._current = None
        req = urllib.request.Request(f"{base}/api/v1/runs/{run.id}", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req) as resp:
            stored = json.loads(resp.read())["metrics"][0]["count"]
        spooled = len(list(spool.glob("*.jsonl"))) if spool.exists() else 0
        return {"kind": kind, "points": n, "stored": stored, "wall": wall, "logged": logged,
                "client_cpu": client_cpu, "server_cpu": server_cpu, "db_cpu": db_cpu, "spool_files": spooled}
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        if pg is not None:
            stop_postgres(pg)
        shutil.rmtree(root, ignore_errors=True)


def _cpu_of(pid):
    """CPU seconds of a process and its children (gunicorn master + worker)."""
    import psutil

    proc = psutil.Process(pid)
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        total += sum(child.cpu_times()[:2])
    return total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--batch-size", type=int, default=None, help="client batch size (default: the client's)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    raw_wall, raw_cpu = raw_sqlite_rate(args.points)
    results = []
    for kind in ("sqlite", "postgres") if args.db == "both" else (args.db,):
        if kind == "postgres" and not shutil.which("initdb"):
            print("(no PostgreSQL binaries here: skipped)")
            continue
        results.append(bench_db(kind, args.points, args.batch_size or DEFAULT_BATCH))
        print(f"{kind}: {results[-1]}", flush=True)
    print(f"\nload average at start: {load:.1f}, at the end: {os.getloadavg()[0]:.1f}, on {os.cpu_count()} cores; "
          f"client batches of {args.batch_size or DEFAULT_BATCH:,} points\n")
    print("| measurement | points | wall s | points/s (wall) | vs raw sqlite executemany |")
    print("|---|---:|---:|---:|---:|")
    print(f"| raw sqlite3 executemany, same table + index | {args.points:,} | {args.points / raw_wall:.2f} | "
          f"{raw_wall:,.0f} | 1.00 |")  # raw_wall is a rate (rows/s)
    for r in results:
        rate = r["stored"] / r["wall"]
        print(f"| client → HTTP → store, {r['kind']} | {r['stored']:,} | {r['wall']:.2f} | {rate:,.0f} | "
              f"{rate / raw_wall:.2f} |")
    for r in results:
        print(f"\n{r['kind']}: log loop {r['logged']:.2f} s; client CPU {r['client_cpu']:.1f} s; server CPU "
              f"{r['server_cpu']:.1f} s → {r['stored'] / max(r['server_cpu'], 1e-9):,.0f} points per server-CPU-second; "
              f"spool files left {r['spool_files']}; stored {r['stored']:,} of {r['points']:,}")
        if r["db_cpu"] is not None:
            print(f"{r['kind']}: PostgreSQL server processes' CPU {r['db_cpu']:.1f} s")
        print(f"{r['kind']}: server CPU per point = {raw_cpu * r['server_cpu'] / r['stored']:.2f}× raw executemany's "
              "(the target allows 2×)")
    print(f"\nraw sqlite CPU-bound rate: {raw_cpu:,.0f} rows per CPU-second")
    for r in results:
        wall_ms, cpu_ms = single_point_ms(r["kind"])
        print(f"{r['kind']}: metric_store.ingest of one point (MLflow log_metric's store call): {wall_ms:.2f} ms wall, "
              f"{cpu_ms:.2f} ms CPU (target ≤ 1.5 ms)")


if __name__ == "__main__":
    main()
