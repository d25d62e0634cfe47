"""Environments: a venv per requirements hash on top of the project's, reused, with the build log in the run log."""

import shutil

import pytest

from jobs.models import Environment, read_log
from tracker.models import Run, RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SHOW_ENV = (
    "import importlib.util, sys, requests\n"
    "print('prefix', sys.prefix)\n"
    "print('torch visible', importlib.util.find_spec('torch') is not None)\n"
)


def texts(run):
    return [line.text for line in read_log(run, 0, 10000)[0]]


def test_it_builds_an_environment_once_and_reuses_it(submit_script, workspace, cluster, run_burst_worker, redis_conn, settings):
    # Already satisfied by the project's packages: pip needs no download, torch stays visible.
    env = Environment.objects.create(workspace=workspace, name="with-requests", requirements="requests>=2.0\n")
    shutil.rmtree(settings.DATA_DIR / "envs" / env.requirements_hash, ignore_errors=True)  # cached by an earlier session
    first = submit_script(SHOW_ENV, environment=env)
    second = submit_script(SHOW_ENV, environment=env)
    result = run_burst_worker(cluster, timeout=240)
    assert result.returncode == 0, result.stderr
    runs = [Run.objects.get(pk=first.run.pk), Run.objects.get(pk=second.run.pk)]
    assert [r.status for r in runs] == [RunStatus.COMPLETED] * 2, [r.status_reason for r in runs]
    env_dir = settings.DATA_DIR / "envs" / env.requirements_hash
    for run in runs:
        assert f"prefix {env_dir}" in texts(run)
        assert "torch visible True" in texts(run)
    built, reused = texts(runs[0]), texts(runs[1])
    assert any(line.startswith("building environment") for line in built)
    assert any("requests" in line and "already satisfied" in line.lower() for line in built)
    assert any("is cached, reusing it" in line for line in reused)
    assert not any(line.startswith("building environment") for line in reused)


def test_it_fails_at_preparing_with_pips_error_when_a_requirement_cannot_install(
    submit_script, workspace, cluster, run_burst_worker, redis_conn, settings
):
    # pillow==5.4.1 (the example) builds from source on this machine's Python 3.11 in ~4 minutes,
    # so the requirement that cannot install is a pillow version that never existed.
    env = Environment.objects.create(workspace=workspace, name="no-such-pillow", requirements="pillow==0.0.1")
    job = submit_script("print('never printed')\n", environment=env)
    run_burst_worker(cluster, timeout=300)
    run = Run.objects.get(pk=job.run.pk)
    assert run.status == RunStatus.FAILED
    assert run.status_reason.startswith("Preparing failed: environment build failed (pip exit code")
    assert "No matching distribution found for pillow==0.0.1" in run.status_reason
    assert run.running_at is None and run.preparing_at is not None
    assert "never printed" not in texts(run)
    assert not (settings.DATA_DIR / "envs" / env.requirements_hash / ".ready").exists()


def test_it_cancels_a_job_while_its_environment_builds_killing_pip(
    submit_script, workspace, cluster, start_worker, owner, redis_conn, settings
):
    from conftest import wait_for

    from jobs.services import cancel_job

    # A real, long build: pillow 5.4.1 is compiled from source.
    env = Environment.objects.create(workspace=workspace, name="slow-build", requirements="pillow==5.4.1")
    shutil.rmtree(settings.DATA_DIR / "envs" / env.requirements_hash, ignore_errors=True)
    start_worker(cluster)
    job = submit_script("print('never printed')\n", environment=env)
    wait_for(lambda: any(t.startswith("building environment") for t in texts(job.run)), timeout=60, message="the build")
    assert Run.objects.get(pk=job.run.pk).status == RunStatus.PREPARING
    cancel_job(job, owner)
    wait_for(lambda: Run.objects.get(pk=job.run.pk).status == RunStatus.CANCELED, timeout=10, message="Canceled")
    assert not (settings.DATA_DIR / "envs" / env.requirements_hash).exists()
    assert "never printed" not in texts(job.run)
