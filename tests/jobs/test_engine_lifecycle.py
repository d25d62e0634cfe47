"""Cancel, max duration, a SIGKILLed worker and Redis outages, with real worker processes."""

import os
import signal
import time

import psutil
import pytest
from conftest import wait_for

from jobs.models import ClusterNode, JobNode, JobNodeStatus, NodeStatus, read_log
from jobs.reconciler import reconcile
from jobs.services import WAITING_FOR_QUEUE, cancel_job
from tracker import metric_store
from tracker.models import Artifact, MetricSeries, Run, RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# Prints its pid and a grandchild's pid, writes a partial output, then works "forever".
LONG_SCRIPT = (
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])\n"
    "os.makedirs('outputs', exist_ok=True)\n"
    "open('outputs/partial.txt', 'w').write('half done')\n"
    "print(f'pids {os.getpid()} {child.pid}', flush=True)\n"
    "for i in range(600):\n"
    "    print('step', i, flush=True)\n"
    "    time.sleep(0.5)\n"
)


def status_of(run):
    return Run.objects.values_list("status", flat=True).get(pk=run.pk)


def script_pids(run):
    def find():
        lines, _ = read_log(run, 0, 10000)
        for line in lines:
            if line.text.startswith("pids "):
                return [int(p) for p in line.text.split()[1:]]
        return None

    return wait_for(find, timeout=60, message="the script to start")


def all_dead(pids):
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def test_it_cancels_a_running_job_killing_the_process_tree_and_keeping_partial_outputs(
    submit_script, cluster, start_worker, owner, redis_conn
):
    start_worker(cluster)
    job = submit_script(LONG_SCRIPT)
    pids = script_pids(job.run)
    assert status_of(job.run) == RunStatus.RUNNING
    started = time.monotonic()
    assert cancel_job(job, owner)
    wait_for(lambda: status_of(job.run) == RunStatus.CANCELED, timeout=10, message="Canceled")
    wait_for(lambda: all_dead(pids), timeout=10 - (time.monotonic() - started), message="the process tree to die")
    run = Run.objects.get(pk=job.run.pk)
    assert "olivia" in run.status_reason
    assert Artifact.objects.filter(run=run, path="outputs/partial.txt").exists()
    assert any(line.text == "step 0" for line in read_log(run, 0, 10000)[0])
    wait_for(lambda: ClusterNode.objects.get(cluster=cluster).status == NodeStatus.IDLE, timeout=10, message="node idle")


def test_it_fails_a_job_that_exceeds_its_max_duration(submit_script, cluster, start_worker, redis_conn):
    start_worker(cluster)
    job = submit_script(LONG_SCRIPT, max_duration_seconds=2)
    pids = script_pids(job.run)
    wait_for(lambda: status_of(job.run) == RunStatus.FAILED, timeout=20, message="Failed")
    run = Run.objects.get(pk=job.run.pk)
    assert run.status_reason == "exceeded max run duration of 2 s"
    wait_for(lambda: all_dead(pids), timeout=10, message="the process tree to die")
    assert Artifact.objects.filter(run=run, path="outputs/partial.txt").exists()


def test_it_fails_the_run_with_node_lost_when_its_worker_is_killed_keeping_metrics(
    submit_script, cluster, start_worker, redis_conn
):
    worker = start_worker(cluster)
    job = submit_script(LONG_SCRIPT)
    pids = script_pids(job.run)
    # What the script's client logged before the crash.
    result = metric_store.ingest(job.run, [{"key": "loss", "value": 0.5, "step": 1}, {"key": "loss", "value": 0.4, "step": 2}])
    assert result.stored == 2
    worker_pid = ClusterNode.objects.get(cluster=cluster).pid
    os.kill(worker_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    # The horse notices its worker is gone and takes the script down with it.
    wait_for(lambda: all_dead(pids), timeout=15, message="the orphaned script to die")
    assert reconcile(lost_after=30).lost_nodes == []  # not yet: heartbeats are only seconds old
    report = wait_for(lambda: reconcile(lost_after=3).lost_nodes or None, timeout=30, message="the node to be lost")
    assert report == [(job.pk, 0)]
    assert time.monotonic() - killed_at < 60
    run = Run.objects.get(pk=job.run.pk)
    assert run.status == RunStatus.FAILED and run.status_reason.startswith("node lost")
    assert MetricSeries.objects.get(run=run, key="loss").count == 2
    assert JobNode.objects.get(job=job).status == JobNodeStatus.LOST
    wait_for(lambda: reconcile(lost_after=3) and ClusterNode.objects.get(cluster=cluster).status == NodeStatus.UNREACHABLE,
             timeout=10, message="the worker unreachable")
    worker.wait(timeout=5)
    # A second pass changes nothing: no run is failed twice.
    assert reconcile(lost_after=3).lost_nodes == []


def test_it_starts_a_job_submitted_while_redis_was_down_once_redis_is_back(
    submit_script, cluster, run_burst_worker, redis_url, redis_conn, settings
):
    settings.REDIS_URL = "unix:///nonexistent/redis.sock"
    job = submit_script("print('ran after the outage')\n")
    run = Run.objects.get(pk=job.run.pk)
    assert run.status == RunStatus.QUEUED and run.status_reason == WAITING_FOR_QUEUE
    assert reconcile().enqueued_jobs == []  # still down: stays queued, nothing runs inline
    settings.REDIS_URL = redis_url
    assert reconcile().enqueued_jobs == [job.pk]
    assert reconcile().enqueued_jobs == []  # already on the queue: not twice
    run_burst_worker(cluster)
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED, run.status_reason
    assert [line.text for line in read_log(run, 0, 1000)[0]].count("ran after the outage") == 1


def test_it_enqueues_again_a_queued_job_whose_rq_job_vanished(submit_script, cluster, run_burst_worker, redis_conn):
    job = submit_script("print('survived the flush')\n")
    redis_conn.flushdb()  # Redis restarted without its data
    assert reconcile().enqueued_jobs == [job.pk]
    run_burst_worker(cluster)
    assert status_of(job.run) == RunStatus.COMPLETED


def test_it_fails_the_run_and_kills_the_script_when_the_job_process_dies(submit_script, cluster, start_worker, redis_conn):
    start_worker(cluster)
    job = submit_script(LONG_SCRIPT)
    pids = script_pids(job.run)
    horse = psutil.Process(pids[0]).ppid()  # the RQ work horse that started the script
    os.kill(horse, signal.SIGKILL)  # e.g. the OOM killer
    wait_for(lambda: status_of(job.run) == RunStatus.FAILED, timeout=15, message="Failed")
    assert "job process died" in Run.objects.get(pk=job.run.pk).status_reason
    wait_for(lambda: all_dead(pids), timeout=10, message="the script to die")
    wait_for(lambda: ClusterNode.objects.get(cluster=cluster).status == NodeStatus.IDLE, timeout=10, message="node idle")


def test_it_fails_a_queued_job_whose_cluster_was_deleted(submit_script, cluster, redis_conn):
    job = submit_script("print(1)\n")
    cluster.delete()
    reconcile()
    run = Run.objects.get(pk=job.run.pk)
    assert run.status == RunStatus.FAILED and "cluster was deleted" in run.status_reason
