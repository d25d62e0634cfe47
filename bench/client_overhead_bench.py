"""What tracker.client costs a training loop: log_metric per call, loop slowdown, buffer bound.

    .venv/bin/python bench/client_overhead_bench.py [--steps 6000] [--trials 5] [--server sink|real]

The background sender really sends over HTTP while the loop runs. By default
it sends to a sink (a separate process that reads each request and answers as
the API does) so the figure is the client's own cost: on a 2-core machine a
real server on the same host would take CPU from the loop (`--server real`
measures that too: gunicorn on embedded SQLite, as bench/ingest_bench.py).

1. Tight loops of log_metric and of log_metrics (4 keys): wall and CPU per
   point, split into the calling thread's CPU (time.thread_time) and the
   rest of the process (the sender thread packing and sending), flush included.
2. A training loop doing ~0.5 ms of torch work per step (2,000 steps/s) with
   4 metrics per step, as 4 log_metric calls and as one log_metrics call;
   trials without logging and with each form alternate, medians compared.
   Each logged trial ends with flush(), so all of its sending is counted.
   On a shared machine the A/B difference is noisy, so the cost is also
   accounted directly: the calling thread's CPU for the same logging calls
   without the torch work, plus the sender thread's CPU (its own clock),
   over the loop's CPU without logging.
3. The buffer bound with the server down: a loop logging as fast as it can
   never holds more than max_buffer points in memory.
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
import http.server, json, struct, sys, uuid
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        packed = self.headers.get("Content-Type") == "application/vnd.torchlight.points"
        data = {} if packed else json.loads(body or b"{}")
        if self.path.endswith("/metrics"):
            stored = struct.unpack_from("<I", body, 8)[0] if packed else len(data.get("points", []))
            answer = {"stored": stored, "errors": [], "duplicate": False}
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


def loop(a, reps, steps, run=None, form="log_metric"):
    """(wall s, CPU s of the whole process, CPU s of the sender thread): the sender's work counts in both."""
    sender0 = run.stats["sender_cpu_s"] if run is not None else 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(steps):
        for _ in range(reps):
            b = a @ a
        loss = float(b[0, 0])  # both loops read the loss, as a training loop does
        if run is None:
            continue
        log_step(run, form, loss, step)
    if run is None:
        return time.perf_counter() - t0, time.process_time() - c0, 0.0
    run.flush(120)  # what this trial logged is sent before the clock stops
    return time.perf_counter() - t0, time.process_time() - c0, run.stats["sender_cpu_s"] - sender0


def log_step(run, form, loss, step):
    """One step's four metrics, as four log_metric calls or one log_metrics call."""
    if form == "log_metric":
        run.log_metric("loss", loss, step)
        run.log_metric("acc", 0.5, step)
        run.log_metric("lr", 0.001, step)
        run.log_metric("grad_norm", 1.0, step)
    else:
        run.log_metrics({"loss": loss, "acc": 0.5, "lr": 0.001, "grad_norm": 1.0}, step=step)


def logging_cpu(run, steps, form):
    """CPU seconds of the calling thread for the same logging calls without the torch work (best of 3)."""
    best = None
    for _ in range(3):
        c0 = time.thread_time()
        for step in range(steps):
            log_step(run, form, 0.5, step)
        spent = time.thread_time() - c0
        best = spent if best is None else min(best, spent)
    run.flush(120)
    return best


def tight(run, n, form):
    """Per point: wall µs, calling thread's CPU µs, sender thread's CPU µs (flush included)."""
    t0, m0, s0 = time.perf_counter(), time.thread_time(), run.stats["sender_cpu_s"]
    if form == "log_metric":
        for i in range(n):
            run.log_metric("tight", 0.5, i)
        points = n
    else:
        for i in range(n // 4):
            run.log_metrics({"a": 0.5, "b": 0.25, "c": 1.0, "d": 2.0}, step=i)
        points = n // 4 * 4
    caller = time.thread_time() - m0
    wall = time.perf_counter() - t0
    run.flush(120)
    sender = run.stats["sender_cpu_s"] - s0
    return wall / points * 1e6, caller / points * 1e6, sender / points * 1e6


def median_ratio(samples, base, index):
    return statistics.median(x[index] for x in samples) / statistics.median(x[index] for x in base) - 1


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

        # 1. Tight loops (the sender sends in the background meanwhile); the best of 3 runs each.
        n = 200_000
        per_call = min(tight(run, n, "log_metric") for _ in range(3))
        per_point_batched = min(tight(run, n, "log_metrics") for _ in range(3))

        sent = run.stats
        run.finish("completed", timeout=120)

        # 2. A 2,000 steps/s loop with 4 metrics per step, without logging and with each form (a fresh run:
        # nothing left from the tight loops to replay).
        run = tl.start_run(experiment="overhead", url=base, token=token, spool_dir=root / "spool-loop")
        a, reps = calibrate(torch)
        loop(a, reps, 500)  # warm up
        plain, single, batched = [], [], []
        before = run.stats
        for _ in range(args.trials):
            plain.append(loop(a, reps, args.steps))
            single.append(loop(a, reps, args.steps, run, "log_metric"))
            batched.append(loop(a, reps, args.steps, run, "log_metrics"))
        after = run.stats
        loop_sender_us = (after["sender_cpu_s"] - before["sender_cpu_s"]) / (after["sent"] - before["sent"]) * 1e6
        run.finish("completed", timeout=120)
        tl._current = None
        base_rate = args.steps / statistics.median(w for w, _, _ in plain)
        figures, cpu_pairs, accounted = {}, {}, {}
        plain_cpu = statistics.median(c for _, c, _ in plain)
        for form, logged, name in (("log_metric ×4", single, "log_metric"), ("log_metrics", batched, "log_metrics")):
            pairs = sorted(lg[0] / pl[0] - 1 for pl, lg in zip(plain, logged, strict=True))
            cpu_pairs[form] = sorted(lg[1] / pl[1] - 1 for pl, lg in zip(plain, logged, strict=True))
            figures[form] = (median_ratio(logged, plain, 0), pairs, median_ratio(logged, plain, 1))
            calls = logging_cpu(run, args.steps, name)
            sender = statistics.median(x[2] for x in logged)
            accounted[form] = (calls / plain_cpu, sender / plain_cpu)

        # 3. Buffer bound with the server down.
        down = f"http://127.0.0.1:{free_port()}"
        offline = tl.start_run(experiment="x", url=down, token=token, spool_dir=root / "spool-down",
                               max_buffer=100_000)
        peak = 0
        t0 = time.perf_counter()
        for i in range(1_000_000):
            offline.log_metric("loss", 0.5, i)
            if i % 1000 == 0:
                peak = max(peak, offline._sender.buffered)
        offline_loop = time.perf_counter() - t0
        offline.close(timeout=10)
        tl._current = None
        spooled = sum(f.stat().st_size for f in (root / "spool-down").glob("*.jsonl"))
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(root, ignore_errors=True)

    print(f"\nserver: {args.server}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"tight loops: sent {sent['sent']:,} points, spooled {sent['spooled']:,} (buffer full), refused {sent['refused']}")
    print(f"training loops: sent {after['sent']:,} points, spooled {after['spooled']:,}, refused {after['refused']}\n")
    print("| measurement | result | target |")
    print("|---|---:|---:|")
    for form, (wall, caller, rest) in (("log_metric", per_call), ("log_metrics (4 keys)", per_point_batched)):
        print(f"| {form}, tight loop of {n:,} points: wall per point | {wall:.2f} µs | ≤ 20 µs |")
        print(f"| {form}: CPU per point, calling thread / sender thread | {caller:.2f} / {rest:.2f} µs | sender ≪ 1 µs |")
    print(f"| training loop without logging | {base_rate:,.0f} steps/s | ≈ 2,000 |")
    print(f"| training loops: sender thread CPU per point sent | {loop_sender_us:.2f} µs | ≪ 1 µs |")
    for form, (slowdown, pairs, cpu) in figures.items():
        print(f"| {form}, 4 metrics/step: slowdown (wall, median of {args.trials}) | {slowdown * 100:+.2f} % | ≤ 2 % |")
        print(f"| {form}: per-trial slowdowns (wall) | {', '.join(f'{p * 100:+.1f}' for p in pairs)} % | |")
        print(f"| {form}: per-trial extra CPU | {', '.join(f'{p * 100:+.1f}' for p in cpu_pairs[form])} % | |")
        print(f"| {form}: extra process CPU (median) | {cpu * 100:+.2f} % | ≤ 2 % |")
        calls, sender = accounted[form]
        print(f"| {form}: accounted CPU, logging calls + sender thread | {calls * 100:.2f} % + {sender * 100:.2f} % "
              f"= {(calls + sender) * 100:.2f} % | ≤ 2 % |")
        per_step = (calls + sender) * plain_cpu / args.steps * 1e6
        print(f"| {form}: the same in µs per step (2 % of a 2,000 steps/s step = 10 µs) | {per_step:.1f} µs | ≤ 10 µs |")
    print(f"| server down: peak points in memory while logging 1,000,000 | {peak:,} (max_buffer 100,000) | bounded |")
    print(f"| server down: 1,000,000 log_metric calls | {offline_loop:.2f} s ({offline_loop:.2f} µs/call) | |")
    print(f"| server down: spooled to disk | {spooled / 1e6:.1f} MB | |")


if __name__ == "__main__":
    main()
