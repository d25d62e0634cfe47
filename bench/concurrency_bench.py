#!/usr/bin/env python
"""Concurrency without loss: many processes logging metrics at full speed into a real server.

Starts its own Torchlight (`manage.py up --no-supervisor`: gunicorn, embedded
Redis, SQLite in WAL mode unless --database-url) in a fresh data dir, then
runs N processes logging into ONE run (same metric key, so they fight over the
same series row) and N processes logging into SEPARATE runs, for a bounded
time. About one batch in ten is sent twice with the same idempotency key, as
a client retry after a lost response would. Afterwards it counts the points
in the database and compares with what was sent.

    .venv/bin/python bench/concurrency_bench.py --seconds 30 --processes 16
    .venv/bin/python bench/concurrency_bench.py --seconds 8 --json out.json   # what the test runs

Exit status 0 when nothing was lost or duplicated, no request failed with a
5xx and the server never logged "database is locked"; 1 otherwise.
"""

import argparse
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

SETUP = """
import json, os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from django.contrib.auth import get_user_model
from tracker.models import ApiToken, Experiment, Role, Run, Workspace
user = get_user_model().objects.create_user("bench", password=None)
workspace = Workspace.objects.create(name="Bench", slug="bench")
workspace.add_member(user, Role.OWNER)
experiment = Experiment.objects.create(workspace=workspace, name="concurrency", created_by=user)
runs = [str(Run.objects.create(experiment=experiment, name=f"run-{i}", created_by=user).id) for i in range(RUNS)]
_, raw = ApiToken.mint(user, "bench")
print(json.dumps({"runs": runs, "token": raw}))
"""

COUNT = """
import json, os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
from django.db.models import Count, Sum
from tracker.models import MetricPoint, MetricSeries
points = dict(MetricPoint.objects.values_list("series__run_id").annotate(n=Count("id")))
summary = dict(MetricSeries.objects.values_list("run_id").annotate(n=Sum("count")))
print(json.dumps({"points": {str(k): v for k, v in points.items()}, "summary": {str(k): v for k, v in summary.items()}}))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(data_dir, database_url):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_ENV", "SECRET_KEY")}
    env["TORCHLIGHT_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def django_script(code, env, runs=0):
    result = subprocess.run(
        [PYTHON, "-c", code.replace("RUNS", str(runs))], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise SystemExit(f"bench set-up failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def wait_until_up(url, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the server exited during start-up")
        try:
            with urllib.request.urlopen(url + "/login/", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise SystemExit("the server did not come up")


def post(url, token, body):
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {"raw": exc.read().decode(errors="replace")[:500]}
    except (urllib.error.URLError, OSError) as exc:
        return 0, {"raw": str(exc)}


def writer_process(args, barrier, results):
    barrier.wait(timeout=300)  # every process is up and imported: start together
    results.put(writer(args))


def writer(args):
    """One logging process: batches of points until the deadline; some batches re-sent with the same key."""
    base, token, run_id, key, step_offset, seconds, batch_size, seed = args
    deadline = time.time() + seconds
    rng = random.Random(seed)
    url = f"{base}/api/v1/runs/{run_id}/metrics"
    sent = stored = batches = retries = duplicates_seen = 0
    failures = []
    latencies = []
    step = step_offset
    while time.time() < deadline:
        points = [{"key": key, "value": rng.random(), "step": step + i} for i in range(batch_size)]
        step += batch_size
        body = {"points": points, "idempotency_key": uuid.uuid4().hex}
        started = time.perf_counter()
        status, answer = post(url, token, body)
        latencies.append(time.perf_counter() - started)
        batches += 1
        if status != 200:
            failures.append((status, str(answer)[:300]))
            continue
        sent += batch_size
        stored += answer.get("stored", 0)
        if rng.random() < 0.1:  # a retry after a lost response: must store nothing
            retries += 1
            status, answer = post(url, token, body)
            if status != 200:
                failures.append((status, str(answer)[:300]))
            elif answer.get("duplicate"):
                duplicates_seen += 1
                stored += answer.get("stored", 0)
    return {
        "run": run_id, "sent": sent, "stored_reported": stored, "batches": batches, "retries": retries,
        "duplicates_seen": duplicates_seen, "failures": failures, "latencies": latencies,
    }


def percentile(values, q):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_bench(seconds=30, processes=16, batch_size=100, database_url=None, web_workers=2, keep=False):
    data_dir = Path(tempfile.mkdtemp(prefix="torchlight-bench-"))
    env = server_env(data_dir, database_url)
    subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], env=env, cwd=ROOT, check=True, timeout=300)
    world = django_script(SETUP, env, runs=processes + 1)
    port = free_port()
    log_path = data_dir / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [PYTHON, "manage.py", "up", "--no-supervisor", "--port", str(port), "--web-workers", str(web_workers)],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base, server)
        shared_run, separate_runs = world["runs"][0], world["runs"][1:]
        jobs = [
            (base, world["token"], shared_run, "loss", i * 10_000_000, seconds, batch_size, i) for i in range(processes)
        ] + [
            (base, world["token"], separate_runs[i], "loss", 0, seconds, batch_size, 1000 + i) for i in range(processes)
        ]
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(len(jobs) + 1)
        queue = context.Queue()
        workers = [context.Process(target=writer_process, args=(job, barrier, queue)) for job in jobs]
        for process in workers:
            process.start()
        barrier.wait(timeout=300)
        started = time.time()
        results = [queue.get(timeout=seconds + 600) for _ in workers]
        elapsed = time.time() - started
        for process in workers:
            process.join(timeout=30)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    counted = django_script(COUNT, env)
    server_log = log_path.read_text(errors="replace")

    sent_by_run = {}
    for result in results:
        sent_by_run[result["run"]] = sent_by_run.get(result["run"], 0) + result["sent"]
    mismatches = {
        run: {"sent": sent, "stored": counted["points"].get(run, 0), "summary": counted["summary"].get(run, 0)}
        for run, sent in sent_by_run.items()
        if counted["points"].get(run, 0) != sent or counted["summary"].get(run, 0) != sent
    }
    failures = [f for r in results for f in r["failures"]]
    latencies = [x for r in results for x in r["latencies"]]
    points_sent = sum(sent_by_run.values())
    report = {
        "database": "postgresql" if database_url else "sqlite",
        "seconds": round(elapsed, 1),
        "processes": len(jobs),
        "batch_size": batch_size,
        "batches": sum(r["batches"] for r in results),
        "retries": sum(r["retries"] for r in results),
        "retries_recognised": sum(r["duplicates_seen"] for r in results),
        "points_sent": points_sent,
        "points_stored": sum(counted["points"].get(run, 0) for run in sent_by_run),
        "points_per_second": round(points_sent / elapsed) if elapsed else 0,
        "shared_run_points": sent_by_run.get(shared_run, 0),
        "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "failed_requests": len(failures),
        "server_errors_5xx": sum(1 for status, _ in failures if status >= 500 or status == 0),
        "database_locked": server_log.count("database is locked") + sum("database is locked" in text for _, text in failures),
        "mismatched_runs": mismatches,
        "failure_samples": failures[:5],
    }
    report["ok"] = (
        not mismatches and not failures and report["database_locked"] == 0
        and report["retries"] == report["retries_recognised"] and points_sent > 0
    )
    if keep:
        report["data_dir"] = str(data_dir)
    else:
        subprocess.run(["rm", "-rf", str(data_dir)], check=False)
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--processes", type=int, default=16, help="processes per scenario (one run / separate runs)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--database-url", default=None, help="PostgreSQL instead of the embedded SQLite")
    parser.add_argument("--json", help="write the report here too")
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    report = run_bench(args.seconds, args.processes, args.batch_size, args.database_url, args.web_workers, args.keep)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
