"""What tracker.client costs a training loop: log_metric per call, loop slowdown, buffer bound.

    .venv/bin/python bench/client_overhead_bench.py [--steps 6000] [--trials 5]

The background sender really sends over HTTP while the loop runs. By default
it sends to a sink (a separate process that reads each request and answers as
the API does) so the figure is the client's own cost: on a 2-core machine a
real server on the same host would take CPU from the loop (`--server real`
measures that too: gunicorn on embedded SQLite, as bench/ingest_bench.py). The training
loop does ~0.5 ms of torch work per step (2,000 steps/s) and logs 4 metrics
per step; trials with and without logging alternate, medians compared.
The buffer bound is measured with the server down: a loop logging as fast
as it can never holds more than max_buffer points in memory.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ingest_bench import PY, SETUP, free_port, wait_http  # noqa: E402

SINK = r"""
import http.server, json, sys, uuid
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        data = json.loads(body or b"{}")
        if self.path.endswith("/metrics"):
            answer = {"stored": len(data.get("points", [])), "errors": [], "duplicate": False}
        else:
            answer = {"id": data.get("id") or str(uuid.uuid4())}
        out = json.dumps(answer).encode()
        self.send_response(200 if self.path.endswith("/metrics") else 201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    do_PATCH = do_POST
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def calibrate(torch, target_s=0.0005):
    size = 64
    a = torch.randn(size, size)
    while True:
        t0 = time.perf_counter()
        for _ in range(50):
            a @ a
        per = (time.perf_counter() - t0) / 50
        if per >= target_s or size >= 1024:
            break
        size = int(size * 1.25)
        a = torch.randn(size, size)
    reps = max(1, round(target_s / per))
    return a, reps


def loop(a, reps, steps, run=None):
    """(wall seconds, CPU seconds of the whole process: the sender thread's work counts too)."""
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(steps):
        for _ in range(reps):
            b = a @ a
        loss = float(b[0, 0])  # both loops read the loss, as a training loop does
        if run is not None:
            run.log_metric("loss", loss, step)
            run.log_metric("acc", 0.5, step)
            run.log_metric("lr", 0.001, step)
            run.log_metric("grad_norm", 1.0, step)
    return time.perf_counter() - t0, time.process_time() - c0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--server", choices=("sink", "real"), default="sink")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    import tracker.client as tl

    root = Path(tempfile.mkdtemp(prefix="tl-client-bench-"))
    env = dict(os.environ, TORCHLIGHT_DATA_DIR=str(root / "data"), DJANGO_SETTINGS_MODULE="config.settings")
    env.pop("DATABASE_URL", None)
    subprocess.run([PY, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, check=True)
    token = subprocess.run([PY, "-c", SETUP], cwd=REPO, env=env, check=True, capture_output=True,
                           text=True).stdout.strip().splitlines()[-1]
    port = free_port()
    if args.server == "real":
        command = [PY, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    else:
        command = [PY, "-c", SINK, str(port)]
    server = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/api/v1/schema")
        run = tl.start_run(experiment="overhead", url=base, token=token, spool_dir=root / "spool")

        # 1. log_metric per call, a tight loop (the sender sends in the background meanwhile).
        n = 200_000
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            run.log_metric("tight", 0.5, i)
        per_call_us = (time.perf_counter() - t0) / n * 1e6
        per_call_cpu_us = (time.process_time() - c0) / n * 1e6
        run.flush(120)

        # 2. A 2,000 steps/s loop with 4 metrics per step, with and without logging.
        a, reps = calibrate(torch)
        loop(a, reps, 500)  # warm up
        plain, logged = [], []
        offset = 0
        for _ in range(args.trials):
            plain.append(loop(a, reps, args.steps))
            run._steps.clear()
            logged.append(loop(a, reps, args.steps, run))
            offset += args.steps
        run.finish("completed", timeout=120)
        tl._current = None
        # The loop runs on to let the sender deliver what the last trial logged: its CPU is counted below.
        base_rate = args.steps / statistics.median(w for w, _ in plain)
        slowdown = statistics.median(w for w, _ in logged) / statistics.median(w for w, _ in plain) - 1
        pairs = sorted(lg[0] / pl[0] - 1 for pl, lg in zip(plain, logged, strict=True))
        cpu_slowdown = statistics.median(c for _, c in logged) / statistics.median(c for _, c in plain) - 1

        # 3. Buffer bound with the server down.
        down = f"http://127.0.0.1:{free_port()}"
        offline = tl.start_run(experiment="x", url=down, token=token, spool_dir=root / "spool-down",
                               max_buffer=100_000)
        peak = 0
        t0 = time.perf_counter()
        for i in range(1_000_000):
            offline.log_metric("loss", 0.5, i)
            if i % 1000 == 0:
                peak = max(peak, len(offline._sender.points))
        offline_loop = time.perf_counter() - t0
        offline.close(timeout=10)
        tl._current = None
        spooled = sum(f.stat().st_size for f in (root / "spool-down").glob("*.jsonl"))
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nserver: {args.server}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print("| measurement | result | target |")
    print("|---|---:|---:|")
    print(f"| log_metric, tight loop of {n:,} calls (wall) | {per_call_us:.2f} µs/call | ≤ 20 µs |")
    print(f"| log_metric, tight loop (CPU incl. sender thread) | {per_call_cpu_us:.2f} µs/call | |")
    print(f"| training loop without logging | {base_rate:,.0f} steps/s | ≈ 2,000 |")
    print(f"| slowdown with 4 metrics/step (wall, median of {args.trials}) | {slowdown * 100:+.2f} % | ≤ 2 % |")
    print(f"| per-trial slowdowns (wall) | {', '.join(f'{p * 100:+.1f}' for p in pairs)} % | |")
    print(f"| extra CPU with 4 metrics/step (process CPU, median) | {cpu_slowdown * 100:+.2f} % | ≤ 2 % |")
    print(f"| server down: peak points in memory while logging 1,000,000 | {peak:,} (max_buffer 100,000) | bounded |")
    print(f"| server down: 1,000,000 log_metric calls | {offline_loop:.2f} s ({offline_loop:.2f} µs/call) | |")
    print(f"| server down: spooled to disk | {spooled / 1e6:.1f} MB | |")


if __name__ == "__main__":
    main()
