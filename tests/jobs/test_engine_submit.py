"""submit_job / validate_launch / cancel while Queued, against the real embedded Redis."""

import pytest
from django.core.exceptions import ValidationError
from rq import Queue

from jobs.models import ComputeCluster, Environment, Job, JobNode, JobNodeStatus
from jobs.services import WAITING_FOR_QUEUE, cancel_job, enqueue_job, submit_job, validate_launch
from tracker.models import RunStatus


@pytest.fixture
def cluster(workspace):
    return ComputeCluster.objects.create(workspace=workspace, name="cpu", max_nodes=2)


def _submit(owner, experiment, cluster, **kw):
    kw.setdefault("source_kind", "example")
    kw.setdefault("example_name", "digits")
    kw.setdefault("entry_script", "train.py")
    return submit_job(user=owner, experiment=experiment, cluster=cluster, **kw)


@pytest.mark.django_db(transaction=True)
def test_it_creates_a_queued_run_and_enqueues_one_rq_job_per_node(owner, experiment, cluster, redis_conn):
    job = _submit(owner, experiment, cluster, node_count=2, script_args=["--lr", "; rm -rf /"])
    job.run.refresh_from_db()
    assert job.run.status == RunStatus.QUEUED and job.run.queued_at
    queue = Queue(cluster.queue_name, connection=redis_conn)
    assert queue.count == 2
    rq_job = queue.jobs[0]
    assert rq_job.func_name == "jobs.tasks.run_job_node"
    assert rq_job.args == (job.pk, 0, 1)
    assert rq_job.timeout and rq_job.timeout > 0
    assert list(job.nodes.values_list("node_rank", "status")) == [(0, "pending"), (1, "pending")]
    assert Job.objects.get(pk=job.pk).script_args == ["--lr", "; rm -rf /"]


@pytest.mark.django_db(transaction=True)
def test_it_makes_one_run_for_a_repeated_idempotency_key(owner, experiment, cluster, redis_conn):
    first = _submit(owner, experiment, cluster, idempotency_key="form-123")
    second = _submit(owner, experiment, cluster, idempotency_key="form-123")
    assert first.pk == second.pk
    assert experiment.runs.count() == 1
    assert Queue(cluster.queue_name, connection=redis_conn).count == 1


@pytest.mark.django_db(transaction=True)
def test_it_keeps_the_run_queued_when_redis_is_down_and_enqueues_it_later(owner, experiment, cluster, redis_conn, settings):
    good_url = settings.REDIS_URL
    settings.REDIS_URL = "unix:///nonexistent/redis.sock"
    job = _submit(owner, experiment, cluster)
    job.run.refresh_from_db()
    assert job.run.status == RunStatus.QUEUED
    assert job.run.status_reason == WAITING_FOR_QUEUE
    settings.REDIS_URL = good_url
    assert enqueue_job(job.pk)
    job.run.refresh_from_db()
    assert job.run.status_reason == ""
    assert Queue(cluster.queue_name, connection=redis_conn).count == 1


@pytest.mark.django_db(transaction=True)
def test_it_cancels_a_queued_job_at_once_and_removes_its_rq_job(owner, experiment, cluster, redis_conn):
    job = _submit(owner, experiment, cluster)
    assert cancel_job(job, owner)
    job.run.refresh_from_db()
    assert job.run.status == RunStatus.CANCELED
    assert JobNode.objects.get(job=job).status == JobNodeStatus.CANCELED
    assert Queue(cluster.queue_name, connection=redis_conn).count == 0
    assert not cancel_job(job, owner)  # already finished


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"node_count": 3}, "node_count"),
        ({"node_count": 0}, "node_count"),
        ({"backend": "nccl"}, "backend"),
        ({"backend": "nccl", "use_gpu": True}, "use_gpu"),
        ({"env_vars": {"LD_PRELOAD": "/x.so"}}, "env_vars"),
        ({"env_vars": {"PYTHONPATH": "/x"}}, "env_vars"),
        ({"env_vars": {"TORCHLIGHT_TOKEN": "x"}}, "env_vars"),
        ({"env_vars": {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}}, "env_vars"),
        ({"env_vars": {"1BAD": "x"}}, "env_vars"),
        ({"entry_script": "../train.py"}, "entry_script"),
        ({"entry_script": "/etc/passwd.py"}, "entry_script"),
        ({"max_duration_seconds": 0}, "max_duration_seconds"),
        ({"script_args": "--lr 1"}, "script_args"),
    ],
)
def test_it_refuses_bad_launch_settings_with_a_field_error(db, workspace, kwargs, field):
    cluster = ComputeCluster.objects.create(workspace=workspace, name="cpu", max_nodes=2)
    with pytest.raises(ValidationError) as err:
        validate_launch(cluster=cluster, **kwargs)
    assert field in err.value.message_dict


def test_it_refuses_mpi_where_mpirun_is_missing(db, workspace, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    cluster = ComputeCluster.objects.create(workspace=workspace, name="cpu")
    with pytest.raises(ValidationError) as err:
        validate_launch(cluster=cluster, backend="mpi")
    assert "mpirun" in err.value.message_dict["backend"][0]


@pytest.mark.django_db(transaction=True)
def test_it_stores_nothing_when_the_launch_is_invalid(owner, experiment, cluster, redis_conn):
    with pytest.raises(ValidationError):
        _submit(owner, experiment, cluster, node_count=5)
    assert experiment.runs.count() == 0 and Job.objects.count() == 0
    assert Queue(cluster.queue_name, connection=redis_conn).count == 0


@pytest.mark.parametrize(
    "text",
    ["-r other.txt", "-e .", "--index-url https://evil/simple", "--extra-index-url https://x", "-f /tmp",
     "--find-links /tmp", "https://x/y.whl", "./pkg", "/abs/pkg", "pkg @ https://x/pkg.whl", "not a req!!"],
)
def test_it_refuses_unsafe_or_invalid_requirements(text):
    with pytest.raises(ValidationError):
        Environment.parse_requirements(text)


def test_it_normalises_requirements_and_hashes_them_order_free():
    reqs = Environment.parse_requirements("# comment\nrequests>=2.0\n\nnumpy  # why\n")
    assert reqs == ["requests>=2.0", "numpy"]
    assert Environment.hash_requirements(reqs) == Environment.hash_requirements(["numpy", "requests>=2.0"])


def test_it_marks_a_silent_worker_unreachable_and_reachable_again_when_it_beats(db, workspace):
    from datetime import timedelta

    from django.utils import timezone

    from jobs.models import ClusterNode, NodeStatus
    from jobs.reconciler import reconcile

    cluster = ComputeCluster.objects.create(workspace=workspace, name="cpu")
    node = ClusterNode.objects.create(cluster=cluster, name="n1", hostname="h", pid=1,
                                      last_heartbeat=timezone.now() - timedelta(seconds=120))
    assert reconcile(lost_after=30).unreachable_workers == ["n1"]
    node.refresh_from_db()
    assert node.status == NodeStatus.UNREACHABLE
    node.beat()
    node.refresh_from_db()
    assert node.status == NodeStatus.IDLE
