"""The same mlflow-client workload against Torchlight and against a stock `mlflow server` on SQLite.

    .venv/bin/python bench/mlflow_bench.py [--points 100000] [--calls 2000] [--mlflow-python PATH]

Each server gets its own fresh data dir and two worker processes. Torchlight
runs as `make run` runs it (gunicorn via `manage.py up --no-supervisor`), the
stock server from a separate virtualenv (`mlflow==3.17.2` pins gunicorn<27,
which clashes with ours): by default var/mlflow-server-venv, made with

    python3.11 -m venv var/mlflow-server-venv && var/mlflow-server-venv/bin/pip install mlflow==3.17.2

Figures (all through the real mlflow client, `MlflowClient`):
  log_batch    N points of one metric via log_batch (the client sends 1,000 per request)
  log_metric   M single log_metric calls on one reused connection (mean and median per call:
               a Nagle/delayed-ACK stall shows as ~40 ms per call)
  history      get_metric_history of the N points (client total, and the server's share:
               the same pages fetched raw with requests, without protobuf parsing)
Prints a markdown table with the ratios; re-runnable, leaves nothing behind.
"""

import argparse
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


def workload(url, token, points, calls):
    os.environ["MLFLOW_TRACKING_TOKEN"] = token
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "3"  # a server may close an idle keep-alive connection
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "0"
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(url)
    experiment_id = client.create_experiment(f"bench-{time.time_ns()}")
    run_id = client.create_run(experiment_id).info.run_id
    base = int(time.time() * 1000)
    metrics = [Metric("batch_loss", 1.0 / (i + 1), base + i, i) for i in range(points)]

    t0 = time.perf_counter()
    client.log_batch(run_id, metrics=metrics)
    log_batch_s = time.perf_counter() - t0

    per_call = []
    t0 = time.perf_counter()
    for i in range(calls):
        t = time.perf_counter()
        client.log_metric(run_id, "loss", 1.0 / (i + 1), step=i)
        per_call.append(time.perf_counter() - t)
    log_metric_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    history = client.get_metric_history(run_id, "batch_loss")
    history_s = time.perf_counter() - t0
    assert len(history) == points, (len(history), points)

    # The server's share: the same pages, raw.
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"}
    t0 = time.perf_counter()
    fetched, page_token = 0, None
    while True:
        params = {"run_id": run_id, "metric_key": "batch_loss", "max_results": 25000}
        if page_token:
            params["page_token"] = page_token
        body = session.get(f"{url}/api/2.0/mlflow/metrics/get-history", params=params, headers=headers).json()
        fetched += len(body.get("metrics", []))
        page_token = body.get("next_page_token")
        if not page_token:
            break
    history_raw_s = time.perf_counter() - t0
    assert fetched == points, (fetched, points)
    return {
        "log_batch_s": log_batch_s,
        "log_metric_s": log_metric_s,
        "log_metric_mean_ms": 1000 * log_metric_s / calls,
        "log_metric_median_ms": 1000 * statistics.median(per_call),
        "history_s": history_s,
        "history_raw_s": history_raw_s,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--mlflow-python", default=str(ROOT / "var" / "mlflow-server-venv" / "bin" / "python"))
    args = parser.parse_args()
    if not Path(args.mlflow_python).exists():
        sys.exit(f"no stock mlflow server at {args.mlflow_python}: see the docstring for the one-line setup")

    workdir = Path(tempfile.mkdtemp(prefix="tl-mlflow-bench-"))
    results = {}
    try:
        for name, start in (("Torchlight", start_torchlight), ("mlflow server", lambda w: start_mlflow(w, args.mlflow_python))):
            url, token, process = start(workdir)
            try:
                results[name] = workload(url, token, args.points, args.calls)
            finally:
                stop(process)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    tl, ml = results["Torchlight"], results["mlflow server"]
    rows = [
        (f"log_batch {args.points:,} points (s)", "log_batch_s"),
        (f"{args.calls:,} log_metric calls (s)", "log_metric_s"),
        ("log_metric mean per call (ms)", "log_metric_mean_ms"),
        ("log_metric median per call (ms)", "log_metric_median_ms"),
        (f"get_metric_history {args.points:,} points, client total (s)", "history_s"),
        (f"get_metric_history {args.points:,} points, server share (raw HTTP) (s)", "history_raw_s"),
    ]
    print("| figure | Torchlight | mlflow server (SQLite) | ratio |")
    print("|---|---:|---:|---:|")
    for label, key in rows:
        print(f"| {label} | {tl[key]:.3f} | {ml[key]:.3f} | {ml[key] / tl[key]:.1f}× |")


if __name__ == "__main__":
    main()
