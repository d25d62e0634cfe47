"""Fixtures for job tests with real worker processes (`manage.py worker`) on the real embedded Redis.

Other job test files import these: `cluster`, `worker_env`, `start_worker`,
`run_burst_worker`, `wait_for`, `upload`, `submit_script`.
"""

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from jobs.models import ComputeCluster

BASE_DIR = Path(settings.BASE_DIR)


@pytest.fixture
def cluster(workspace):
    return ComputeCluster.objects.create(workspace=workspace, name="cpu", max_nodes=2, idle_seconds_before_scaledown=2)


@pytest.fixture
def worker_env(redis_url):
    """Environment for a worker subprocess: same data dir, the test database, this test's Redis."""
    from config.testing import subprocess_database_url

    env = dict(os.environ)
    env.update(
        TORCHLIGHT_DATA_DIR=str(settings.DATA_DIR),
        DATABASE_URL=subprocess_database_url(),  # the test database, SQLite or PostgreSQL
        REDIS_URL=redis_url,
        TORCHLIGHT_HEARTBEAT_SECONDS="1",
        TORCHLIGHT_KILL_GRACE_SECONDS="3",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    return env


@pytest.fixture
def start_worker(worker_env):
    """start_worker(cluster, *extra_args, env=None) -> Popen of a long-running `manage.py worker`; stopped at teardown."""
    procs = []

    def _start(cluster, *extra, env=None):
        args = [sys.executable, str(BASE_DIR / "manage.py"), "worker", "--cluster", cluster.name,
                "--workspace", cluster.workspace.slug, *extra]
        proc = subprocess.Popen(args, cwd=BASE_DIR, env={**worker_env, **(env or {})}, start_new_session=True)
        procs.append(proc)
        return proc

    yield _start
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the worker, its horse and anything they started
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)


@pytest.fixture
def run_burst_worker(worker_env):
    """run_burst_worker(cluster, timeout=120) -> CompletedProcess of `manage.py worker --burst`."""

    def _run(cluster, timeout=120, env=None):
        args = [sys.executable, str(BASE_DIR / "manage.py"), "worker", "--cluster", cluster.name,
                "--workspace", cluster.workspace.slug, "--burst"]
        return subprocess.run(args, cwd=BASE_DIR, env={**worker_env, **(env or {})}, timeout=timeout,
                              capture_output=True, text=True)

    return _run


def wait_for(predicate, timeout=30.0, interval=0.2, message="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {message}")


def upload(source_text, filename="train.py"):
    """An uploaded .py source as submit_job takes it."""
    return (io.BytesIO(source_text.encode()), filename)


@pytest.fixture
def submit_script(owner, experiment, cluster):
    """submit_script(source_text, **submit_job kwargs) -> Job, submitted as an uploaded train.py."""
    from jobs.services import submit_job

    def _submit(source_text, **kwargs):
        kwargs.setdefault("entry_script", "train.py")
        return submit_job(user=kwargs.pop("user", owner), experiment=kwargs.pop("experiment", experiment),
                          cluster=kwargs.pop("cluster", cluster), source_kind="upload",
                          source_upload=upload(source_text, kwargs["entry_script"]), **kwargs)

    return _submit
