"""Jobs engine speed: submit -> first line vs `python train.py` by hand, log line -> database, idle RSS.

    .venv/bin/python bench/jobs_bench.py [--repeats 5]

Self-contained and re-runnable: a fresh data dir under /tmp (SQLite + the
embedded Redis), a real long-running `manage.py worker` node (warm: waiting
on its queue), jobs submitted through `jobs.services.submit_job`.

1. Submit -> the script's first line running: the script prints time.time()
   as its first statement; measured from just before submit_job() returns
   control. Compared with `python train.py` started by hand (same script,
   same interpreter, measured from just before Popen). Target: <= 1 s more.
2. Log line -> database: a script prints a timestamp every 50 ms; the bench
   polls the log table every 20 ms and records when each line becomes
   readable (what the run page's poller can see). Target: <= 2 s.
3. The supervisor plus one idle worker node: RSS of both processes, read
   with psutil once the node is idle. Target: < 150 MB together.
"""

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

FIRST_LINE = "import time\nprint('started', repr(time.time()), flush=True)\n"
TICKS = (
    "import time\n"
    "for i in range(60):\n"
    "    print('tick', i, repr(time.time()), flush=True)\n"
    "    time.sleep(0.05)\n"
)


def wait_for(predicate, timeout, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError("timed out")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="tl-bench-jobs-"))
    os.environ["TORCHLIGHT_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    socket_path = data_dir / "redis" / "redis.sock"
    os.environ["REDIS_URL"] = f"unix://{socket_path}?db=0"
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()
    import psutil
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from config.redis import start_embedded_redis, stop_embedded_redis
    from jobs.models import ClusterNode, ComputeCluster, NodeStatus, RunLogLine
    from jobs.services import submit_job
    from tracker.models import Experiment, Role, Run, Workspace

    call_command("migrate", verbosity=0)
    start_embedded_redis(socket_path)
    user = get_user_model().objects.create_user("bench", password="x" * 20)
    workspace = Workspace.objects.create(name="Bench", slug="bench")
    workspace.add_member(user, Role.OWNER)
    experiment = Experiment.objects.create(workspace=workspace, name="jobs-bench")
    cluster = ComputeCluster.objects.create(workspace=workspace, name="cpu", max_nodes=1, kind="external")
    env = dict(os.environ)
    manage = [sys.executable, str(BASE_DIR / "manage.py")]
    procs = []

    def submit(source):
        return submit_job(user=user, experiment=experiment, cluster=cluster, source_kind="upload",
                          source_upload=(io.BytesIO(source.encode()), "train.py"), entry_script="train.py")

    def first_line_time(run_id):
        def find():
            row = RunLogLine.objects.filter(run_id=run_id, text__startswith="started ").first()
            return float(row.text.split()[1]) if row else None

        return wait_for(find, 120)

    try:
        worker = subprocess.Popen([*manage, "worker", "--cluster", "cpu", "--workspace", "bench"], cwd=BASE_DIR, env=env)
        procs.append(worker)
        wait_for(lambda: ClusterNode.objects.filter(cluster=cluster, status=NodeStatus.IDLE).exists(), 120, 0.1)

        # 1. submit -> first line (after one warm-up job), vs by hand.
        first_line_time(submit(FIRST_LINE).run_id)
        via_job, by_hand = [], []
        script = data_dir / "train.py"
        script.write_text(FIRST_LINE)
        for _ in range(args.repeats):
            wait_for(lambda: not Run.objects.filter(status__in=["queued", "preparing", "running", "post_processing", "scaling"]).exists(), 60, 0.05)
            start = time.time()
            job = submit(FIRST_LINE)
            via_job.append(first_line_time(job.run_id) - start)
            start = time.time()
            out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=data_dir).stdout
            by_hand.append(float(out.split()[1]) - start)

        # 2. printed -> readable in the log table.
        wait_for(lambda: not Run.objects.exclude(status__in=["completed", "failed", "canceled"]).exists(), 60, 0.05)
        job = submit(TICKS)
        seen = {}
        deadline = time.monotonic() + 120
        offset = 0
        while len(seen) < 60 and time.monotonic() < deadline:
            now = time.time()
            for row in RunLogLine.objects.filter(run_id=job.run_id, id__gt=offset).order_by("id"):
                offset = row.id
                if row.text.startswith("tick "):
                    _, index, printed = row.text.split()
                    seen[int(index)] = now - float(printed)
            time.sleep(0.02)
        lags = list(seen.values())

        # 3. supervisor + idle worker RSS: a local cluster kept at one node.
        worker.terminate()
        worker.wait(timeout=30)
        ComputeCluster.objects.create(workspace=workspace, name="local", kind="local", min_nodes=1, max_nodes=1)
        supervisor = subprocess.Popen([*manage, "supervisor"], cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL)
        procs.append(supervisor)
        node = wait_for(lambda: ClusterNode.objects.filter(cluster__name="local", status=NodeStatus.IDLE).first(), 120, 0.2)
        time.sleep(3)
        sup_rss = psutil.Process(supervisor.pid).memory_info().rss / 2**20
        node_rss = psutil.Process(node.pid).memory_info().rss / 2**20
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        stop_embedded_redis(socket_path)

    overhead = statistics.median(via_job) - statistics.median(by_hand)
    print("| measure | median | max | target |")
    print("|---|---|---|---|")
    print(f"| submit -> first line, job on a warm node ({args.repeats} runs) | {statistics.median(via_job):.3f} s | {max(via_job):.3f} s | |")
    print(f"| `python train.py` by hand -> first line | {statistics.median(by_hand):.3f} s | {max(by_hand):.3f} s | |")
    print(f"| overhead of the job (median difference) | {overhead:.3f} s | | <= 1 s |")
    print(f"| printed -> readable in the log table ({len(lags)} lines) | {statistics.median(lags):.3f} s | {max(lags):.3f} s | <= 2 s |")
    print(f"| RSS supervisor + idle worker | {sup_rss + node_rss:.0f} MB ({sup_rss:.0f} + {node_rss:.0f}) | | < 150 MB |")
    missed = overhead > 1.0 or max(lags) > 2.0 or sup_rss + node_rss >= 150
    if missed:
        print("TARGET MISSED", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
