"""The same mlflow-client workload against Torchlight and against a stock `mlflow server` on SQLite.

    .venv/bin/python bench/mlflow_bench.py [--points 100000] [--calls 2000] [--mlflow-python PATH]

Each server gets its own fresh data dir and two worker processes. Torchlight
runs as `make run` runs it (gunicorn via `manage.py up --no-supervisor`), the
stock server from a separate virtualenv (`mlflow==3.17.2` pins gunicorn<27,
which clashes with ours): by default var/mlflow-server-venv, made with

    python3.11 -m venv var/mlflow-server-venv && var/mlflow-server-venv/bin/pip install mlflow==3.17.2

Workload (the issue's): N points of one metric via log_batch (the client sends 1,000 per request),
M single log_metric calls on one reused keep-alive connection (a Nagle/delayed-ACK stall would show
as ~40 ms per call), and reading the N points back with get_metric_history (25,000 per page).

  server share   the requests byte-for-byte as MlflowClient builds them (its own serializer),
                 replayed with `requests`: what each server costs (default)
  mlflow client  --client: the same through MlflowClient end to end; its protobuf work is the
                 same for both servers and dominates on a slow machine (about 13 s per 100k points
                 and 8 ms per log_metric call on the build machine, measured against a server that
                 answers {} at once)
Prints a markdown table with the ratios; re-runnable, leaves nothing behind.
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, process, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            requests.get(url, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.3)
    raise RuntimeError(f"no answer from {url} in {timeout}s")


def start_torchlight(workdir):
    data = workdir / "torchlight"
    env = dict(os.environ, TORCHLIGHT_DATA_DIR=str(data), LOG_LEVEL="ERROR")
    env.pop("REDIS_URL", None)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, cwd=ROOT)
    script = (
        "from django.contrib.auth import get_user_model;"
        "from tracker.models import ApiToken, Workspace, Role;"
        "u = get_user_model().objects.create_user('bench', password='bench-password-123');"
        "w, _ = Workspace.objects.get_or_create(slug='bench', defaults={'name': 'Bench'});"
        "w.add_member(u, Role.OWNER);"
        "print(ApiToken.mint(u, 'bench')[1])"
    )
    token = subprocess.run([*manage, "shell", "-c", script], env=env, check=True, cwd=ROOT, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    port = free_port()
    process = subprocess.Popen(
        [*manage, "up", "--no-supervisor", "--port", str(port), "--web-workers", "2"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/login/", process)
    return url, token, process


def start_mlflow(workdir, python):
    data = workdir / "mlflow"
    data.mkdir()
    port = free_port()
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    process = subprocess.Popen(
        [os.path.abspath(python), "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{data}/mlflow.db",
         "--artifacts-destination", str(data / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=env, cwd=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/health", process, timeout=180)
    return url, "unused", process


def stop(process):
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)


def client_workload(url, token, points, calls):
    """The figures as a training script sees them: everything through MlflowClient (its own CPU included)."""
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "3"  # a server may close an idle keep-alive connection
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "0"
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(url)
    experiment_id = client.create_experiment(f"bench-client-{time.time_ns()}")
    run_id = client.create_run(experiment_id).info.run_id
    base = int(time.time() * 1000)
    metrics = [Metric("batch_loss", 1.0 / (i + 1), base + i, i) for i in range(points)]
    t0 = time.perf_counter()
    client.log_batch(run_id, metrics=metrics)
    log_batch_s = time.perf_counter() - t0
    per_call = []
    for i in range(calls):
        t = time.perf_counter()
        client.log_metric(run_id, "loss", 1.0 / (i + 1), step=i)
        per_call.append(time.perf_counter() - t)
    t0 = time.perf_counter()
    history = client.get_metric_history(run_id, "batch_loss")
    history_s = time.perf_counter() - t0
    assert len(history) == points, (len(history), points)
    return {
        "log_batch_s": log_batch_s,
        "log_metric_s": sum(per_call),
        "log_metric_median_ms": 1000 * statistics.median(per_call),
        "history_s": history_s,
    }


def server_workload(url, token, points, calls):
    """The server's share: byte-for-byte the requests MlflowClient sends (built with its own serializer),
    replayed on one keep-alive connection, so the client's protobuf work (the same for both servers) is left out."""
    from mlflow.entities import Metric
    from mlflow.protos.service_pb2 import LogBatch, LogMetric
    from mlflow.utils.proto_json_utils import message_to_json

    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    api = f"{url}/api/2.0/mlflow"

    def post(path, body):
        response = session.post(f"{api}/{path}", data=body, headers=headers)
        response.raise_for_status()
        return response.json()

    experiment_id = post("experiments/create", json.dumps({"name": f"bench-raw-{time.time_ns()}"}))["experiment_id"]
    run_id = post("runs/create", json.dumps({"experiment_id": experiment_id}))["run"]["info"]["run_id"]
    base = int(time.time() * 1000)
    batches = []
    for start in range(0, points, 1000):  # the client's own chunking (MAX_METRICS_PER_BATCH)
        chunk = [Metric("batch_loss", 1.0 / (i + 1), base + i, i).to_proto() for i in range(start, min(points, start + 1000))]
        batches.append(message_to_json(LogBatch(run_id=run_id, metrics=chunk)))
    singles = [
        message_to_json(LogMetric(run_id=run_id, run_uuid=run_id, key="loss", value=1.0 / (i + 1), timestamp=base + i, step=i))
        for i in range(calls)
    ]

    t0 = time.perf_counter()
    for body in batches:
        post("runs/log-batch", body)
    log_batch_s = time.perf_counter() - t0

    per_call = []
    for body in singles:
        t = time.perf_counter()
        post("runs/log-metric", body)
        per_call.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    fetched, page_token = 0, None
    while True:
        params = {"run_id": run_id, "run_uuid": run_id, "metric_key": "batch_loss", "max_results": 25000}
        if page_token:
            params["page_token"] = page_token
        response = session.get(f"{api}/metrics/get-history", params=params, headers=headers)
        response.raise_for_status()
        body = response.json()
        fetched += len(body.get("metrics", []))
        page_token = body.get("next_page_token")
        if not page_token:
            break
    history_s = time.perf_counter() - t0
    assert fetched == points, (fetched, points)
    return {
        "log_batch_s": log_batch_s,
        "log_metric_s": sum(per_call),
        "log_metric_median_ms": 1000 * statistics.median(per_call),
        "history_s": history_s,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--client", action="store_true", help="also time everything through MlflowClient (adds its CPU)")
    parser.add_argument("--mlflow-python", default=str(ROOT / "var" / "mlflow-server-venv" / "bin" / "python"))
    args = parser.parse_args()
    if not Path(args.mlflow_python).exists():
        sys.exit(f"no stock mlflow server at {args.mlflow_python}: see the docstring for the one-line setup")

    workloads = [("server share", server_workload)] + ([("mlflow client", client_workload)] if args.client else [])
    workdir = Path(tempfile.mkdtemp(prefix="tl-mlflow-bench-"))
    results = {}
    try:
        for name, start in (("Torchlight", start_torchlight), ("mlflow server", lambda w: start_mlflow(w, args.mlflow_python))):
            url, token, process = start(workdir)
            try:
                for label, workload in workloads:
                    results[(name, label)] = workload(url, token, args.points, args.calls)
                    print(f"{name} / {label}: {results[(name, label)]}", file=sys.stderr, flush=True)
            finally:
                stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows = [
        (f"log_batch {args.points:,} points (s)", "log_batch_s"),
        (f"{args.calls:,} log_metric calls (s)", "log_metric_s"),
        ("log_metric median per call (ms)", "log_metric_median_ms"),
        (f"get_metric_history {args.points:,} points (s)", "history_s"),
    ]
    print("| workload | figure | Torchlight | mlflow server (SQLite) | ratio |")
    print("|---|---|---:|---:|---:|")
    for label, _workload in workloads:
        tl, ml = results[("Torchlight", label)], results[("mlflow server", label)]
        for text, key in rows:
            print(f"| {label} | {text} | {tl[key]:.3f} | {ml[key]:.3f} | {ml[key] / tl[key]:.1f}× |")


if __name__ == "__main__":
    main()
