"""The supervisor scales a local cluster's worker processes: up when jobs wait, down after the idle timeout."""

import os
import signal
import subprocess
import sys

import pytest
from conftest import BASE_DIR, wait_for

from jobs.models import ClusterNode, NodeStatus
from tracker.models import Run, RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def supervisor(worker_env):
    proc = subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "supervisor", "--interval", "0.5"],
        cwd=BASE_DIR, env={**worker_env, "TORCHLIGHT_RECONCILE_SECONDS": "2"}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # stops the workers it started (their own sessions)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    for node in ClusterNode.objects.filter(managed=True).exclude(status=NodeStatus.STOPPED):
        try:
            os.kill(node.pid, signal.SIGKILL)  # a worker the supervisor could not stop must not outlive the test
        except ProcessLookupError:
            pass


def test_it_starts_nodes_for_waiting_jobs_and_stops_them_when_idle(submit_script, cluster, supervisor, redis_conn):
    assert cluster.min_nodes == 0 and cluster.idle_seconds_before_scaledown == 2
    first = submit_script("print('one')\n")
    second = submit_script("import time; time.sleep(1); print('two')\n")
    wait_for(lambda: all(Run.objects.get(pk=j.run.pk).status == RunStatus.COMPLETED for j in (first, second)),
             timeout=120, message="both runs to complete")
    assert 1 <= ClusterNode.objects.filter(cluster=cluster, managed=True).count() <= cluster.max_nodes
    wait_for(lambda: not ClusterNode.objects.filter(cluster=cluster).alive().exists(), timeout=30,
             message="idle nodes to be stopped")
    assert set(ClusterNode.objects.filter(cluster=cluster).values_list("status", flat=True)) == {NodeStatus.STOPPED}
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=20) == 0
    assert "started node" in supervisor.stdout.read()


def test_it_keeps_min_nodes_running_each_with_its_own_gpus_and_stops_them_with_it(cluster, supervisor, redis_conn):
    cluster.gpus_per_node, cluster.min_nodes, cluster.max_nodes = 2, 2, 2
    cluster.save(update_fields=["gpus_per_node", "min_nodes", "max_nodes"])
    wait_for(lambda: ClusterNode.objects.filter(cluster=cluster, status=NodeStatus.IDLE).count() == 2, timeout=60,
             message="two idle nodes")
    assert sorted(ClusterNode.objects.filter(cluster=cluster).values_list("gpus", flat=True)) == ["0,1", "2,3"]
    supervisor.send_signal(signal.SIGTERM)
    supervisor.wait(timeout=20)
    wait_for(lambda: not ClusterNode.objects.filter(cluster=cluster).alive().exists(), timeout=15,
             message="the supervisor's nodes to stop with it")


def test_it_stops_its_nodes_when_the_supervisor_itself_is_killed(cluster, supervisor, redis_conn):
    cluster.min_nodes = 1
    cluster.save(update_fields=["min_nodes"])
    wait_for(lambda: ClusterNode.objects.filter(cluster=cluster, status=NodeStatus.IDLE).count() == 1, timeout=60,
             message="one idle node")
    os.killpg(supervisor.pid, signal.SIGKILL)  # no chance to stop its workers
    supervisor.wait(timeout=10)
    wait_for(lambda: not ClusterNode.objects.filter(cluster=cluster).alive().exists(), timeout=20,
             message="the orphaned node to leave")
