"""Registry benchmarks (re-runnable): ONNX export end to end, and 1 GB downloads.

    .venv/bin/python bench/registry_bench.py [--size-mb 1024] [--exports 3]

1. ResNet-18 (state dict + torchvision:resnet18, 1×3×224×224): from
   `request_onnx_export` (what the button calls) to the new ONNX version
   in the database, on a warm RQ worker process; includes the loader
   subprocess, torch.onnx.export, onnx.checker and the onnxruntime parity.
   Target ≤ 10 s.
2. A version of one `--size-mb` file, downloaded through gunicorn on
   loopback via the API (file, then streamed zip): throughput (target
   ≥ 200 MB/s) and the server worker's peak extra RSS (target < 100 MB).

Everything lives in its own data dir (var/bench-registry); nothing else is touched.
"""

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "var" / "bench-registry"
os.environ["TORCHLIGHT_DATA_DIR"] = str(DATA_DIR)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.pop("DATABASE_URL", None)
os.environ.pop("REDIS_URL", None)
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

django.setup()

import psutil  # noqa: E402
import requests  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402

from config.redis import get_connection, start_embedded_redis  # noqa: E402
from jobs.models import ComputeCluster  # noqa: E402
from registry import services  # noqa: E402
from registry.models import RegisteredModel, TaskStatus  # noqa: E402
from tracker import storage  # noqa: E402
from tracker.models import ApiToken, Artifact, Experiment, Role, Run, RunStatus, Workspace  # noqa: E402


def setup():
    call_command("migrate", verbosity=0)
    redis_url = start_embedded_redis()
    user = get_user_model().objects.filter(username="bench").first() or get_user_model().objects.create_user("bench", password="x")
    workspace, _ = Workspace.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
    workspace.add_member(user, Role.OWNER)
    experiment, _ = Experiment.objects.get_or_create(workspace=workspace, name="bench")
    cluster, _ = ComputeCluster.objects.get_or_create(workspace=workspace, name="bench-local")
    return redis_url, user, workspace, experiment, cluster


def start_worker(cluster, redis_url):
    code = (
        "import django,os;os.environ.setdefault('DJANGO_SETTINGS_MODULE','config.settings');django.setup();"
        "from rq import Worker;from config.redis import get_connection;"
        f"Worker([{cluster.queue_name!r}],connection=get_connection({redis_url!r})).work()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL)
    from rq import Worker

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(cluster.queue_name in w.queue_names() for w in Worker.all(connection=get_connection(redis_url))):
            return proc
        time.sleep(0.2)
    raise SystemExit("the worker did not start")


def bench_export(user, workspace, experiment, cluster, redis_url, repeats):
    import torch
    import torchvision

    run = Run.objects.create(experiment=experiment, name="resnet18", created_by=user, status=RunStatus.COMPLETED)
    buf = io.BytesIO()
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), buf)
    blob = storage.save_stream(io.BytesIO(buf.getvalue()))
    Artifact.objects.create(run=run, path="outputs/model.pt", size=blob.size, sha256=blob.sha256, storage_key=blob.key)
    t = time.monotonic()
    version = services.register_from_run(
        run=run, path="outputs/model.pt", name="resnet18-bench", user=user,
        architecture="torchvision:resnet18", input_shape=[1, 3, 224, 224],
    )
    register_s = time.monotonic() - t
    stop_zygote()  # the first export pays the warm loader's start (torch import), like a fresh worker machine
    worker = start_worker(cluster, redis_url)
    times, reports = [], []
    try:
        for _ in range(repeats + 1):
            t = time.monotonic()
            export = services.request_onnx_export(version=version, cluster=cluster, opset=18, user=user)
            while True:
                export.refresh_from_db()
                if export.status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
                    break
                time.sleep(0.05)
            times.append(time.monotonic() - t)
            if export.status != TaskStatus.COMPLETED:
                raise SystemExit(f"export failed: {export.message}\n{export.log}")
            reports.append(export.result_version.parity)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    return register_s, times, reports


def stop_zygote():
    from registry.workdir import zygote_socket_path

    path = str(zygote_socket_path())
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "registry.zygote" in cmdline and path in cmdline:
            proc.terminate()
            proc.wait(timeout=10)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_download(user, workspace, size_mb):
    model = RegisteredModel.objects.filter(workspace=workspace, name="big-bench").first()
    version = model.versions.first() if model else None
    if version is None or version.total_size != size_mb * 1024 * 1024:
        if model:
            services.delete_model(model=model)
        chunk = os.urandom(1024 * 1024)

        class Source:
            def __init__(self):
                self.left = size_mb

            def read(self, n=-1):
                if self.left <= 0:
                    return b""
                self.left -= 1
                return chunk

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

        version = services.register_version(
            workspace=workspace, name="big-bench", user=user, validate=False,
            files=[services.FileSource(path="weights.bin", open=Source)],
        )
    _, raw = ApiToken.mint(user, "bench")
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1", "--timeout", "300"],
        cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    results = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"http://127.0.0.1:{port}/login/", timeout=10)
                break
            except requests.RequestException:
                time.sleep(0.2)
        workers = psutil.Process(server.pid).children()
        proc = workers[0] if workers else psutil.Process(server.pid)
        headers = {"Authorization": f"Bearer {raw}"}
        f = version.files.get()
        requests.get(f"http://127.0.0.1:{port}/api/v1/models/big-bench?workspace=bench", headers=headers, timeout=30)
        for label, url in [
            ("file", f"http://127.0.0.1:{port}/api/v1/models/big-bench/versions/{version.version}/files/{f.pk}?workspace=bench"),
            ("zip", f"http://127.0.0.1:{port}/api/v1/models/big-bench/versions/{version.version}/download?workspace=bench"),
        ]:
            base_rss = proc.memory_info().rss
            peak = [base_rss]
            stop = threading.Event()

            def sample(peak=peak, stop=stop):
                while not stop.is_set():
                    peak[0] = max(peak[0], proc.memory_info().rss)
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample)
            sampler.start()
            t = time.monotonic()
            got = 0
            with requests.get(url, headers=headers, stream=True, timeout=300) as response:
                response.raise_for_status()
                for part in response.iter_content(1024 * 1024):
                    got += len(part)
            elapsed = time.monotonic() - t
            stop.set()
            sampler.join()
            results[label] = {
                "bytes": got, "seconds": elapsed, "mb_s": got / 1024 / 1024 / elapsed,
                "extra_rss_mb": (peak[0] - base_rss) / 1024 / 1024,
            }
    finally:
        server.terminate()
        server.wait(timeout=30)
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--exports", type=int, default=3)
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--skip-download", action="store_true")
    args = parser.parse_args()
    redis_url, user, workspace, experiment, cluster = setup()
    print(f"data dir {settings.DATA_DIR}, {psutil.cpu_count()} CPUs")
    if not args.skip_export:
        register_s, times, reports = bench_export(user, workspace, experiment, cluster, redis_url, args.exports)
        print(f"register resnet18 (copy + validation subprocess): {register_s:.2f} s")
        cold, warm = times[0], times[1:]
        print(f"| ResNet-18 export, request → new version, cold loader | {cold:.2f} s |")
        print("| ResNet-18 export, request → new version, warm loader | " + " | ".join(f"{t:.2f} s" for t in warm) + f" | median {statistics.median(warm):.2f} s |")
        last = reports[-1]
        print(f"  export subprocess {last['seconds']} s, stages {last.get('timings')}, exporter {last['exporter']}, max abs diff {last['max_abs_diff']:.3g}, max rel diff {last['max_rel_diff']:.3g}")
    if not args.skip_download:
        for label, r in bench_download(user, workspace, args.size_mb).items():
            print(f"| {args.size_mb} MB download ({label}) | {r['mb_s']:.0f} MB/s | {r['seconds']:.2f} s | extra RSS {r['extra_rss_mb']:.1f} MB |")


if __name__ == "__main__":
    main()
