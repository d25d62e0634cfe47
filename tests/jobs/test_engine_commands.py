"""manage.py submit / reconcile / bootstrap."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from config.bootstrap import ensure_local_cluster
from jobs.models import ComputeCluster, Job
from tracker.models import Run, RunStatus

pytestmark = pytest.mark.django_db(transaction=True)


def submit(*args):
    out = io.StringIO()
    call_command("submit", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "train.py"
    path.write_text("import sys\nprint('args', sys.argv[1:])\n")
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--cluster", "nope", "--example", "digits"], "no cluster 'nope'"),
        (["--cluster", "cpu", "--example", "nope"], "no built-in example 'nope'"),
        (["--cluster", "cpu", "--source", "/nonexistent.py"], "no such file"),
        (["--cluster", "cpu", "--example", "digits", "--nodes", "5"], "above the cluster's maximum"),
        (["--cluster", "cpu", "--example", "digits", "--env", "LD_PRELOAD=/x.so"], "LD_PRELOAD may not be set"),
        (["--cluster", "cpu", "--example", "digits", "--env", "novalue"], "NAME=VALUE"),
        (["--cluster", "cpu", "--example", "digits", "--pip=--index-url=http://evil"], "not allowed"),
        (["--cluster", "cpu", "--example", "digits", "--backend", "nccl"], "nccl"),
        (["--cluster", "cpu", "--example", "digits", "--workspace", "nope"], "no workspace"),
    ],
)
def test_it_exits_2_with_a_message_on_bad_input(owner, workspace, cluster, redis_conn, extra, message):
    with pytest.raises(CommandError) as err:
        submit("--experiment", "e", "--workspace", workspace.slug, *extra)
    assert err.value.returncode == 2
    assert message in str(err.value)
    assert Run.objects.count() == 0


def test_it_refuses_an_entry_script_that_is_not_in_the_source(owner, workspace, cluster, script, redis_conn):
    with pytest.raises(CommandError) as err:
        submit("--experiment", "e", "--workspace", workspace.slug, "--cluster", "cpu", "--source", str(script.parent), "--entry", "missing.py")
    assert err.value.returncode == 2 and "missing.py" in str(err.value)


@pytest.mark.slow
def test_it_submits_and_waits_printing_the_log_and_exits_0_when_completed(owner, workspace, cluster, script, start_worker, redis_conn):
    start_worker(cluster)
    out = submit("--experiment", "cli", "--workspace", workspace.slug, "--cluster", "cpu", "--source", str(script),
                 "--param", "lr=0.1", "--param", "note=; rm -rf /", "--wait")
    run = Run.objects.get()
    assert out.splitlines()[0] == f"{run.pk} http://127.0.0.1:8000/runs/{run.pk}/" or out.splitlines()[0].startswith(str(run.pk))
    assert "args ['--lr', '0.1', '--note', '; rm -rf /']" in out
    assert "== Completed" in out
    assert run.status == RunStatus.COMPLETED
    assert dict(run.params.values_list("key", "value")) == {"lr": "0.1", "note": "; rm -rf /"}


@pytest.mark.slow
def test_it_exits_nonzero_with_the_reason_when_the_run_fails(owner, workspace, cluster, tmp_path, start_worker, redis_conn):
    start_worker(cluster)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(CommandError) as err:
        submit("--experiment", "cli", "--workspace", workspace.slug, "--cluster", "cpu", "--source", str(tmp_path / "src"),
               "--entry", "main.py", "--wait")
    assert err.value.returncode == 1
    assert "exit code 3" in str(err.value)
    assert Job.objects.get().source_filename == "src.zip"


def test_it_creates_the_local_cluster_only_when_the_workspace_has_none(workspace):
    cluster, created = ensure_local_cluster(workspace)
    assert created and cluster.name == "local" and cluster.kind == "local"
    assert (cluster.min_nodes, cluster.max_nodes, cluster.gpus_per_node) == (0, 2, 0)
    again, created = ensure_local_cluster(workspace)
    assert not created and again.pk == cluster.pk
    assert ComputeCluster.objects.filter(workspace=workspace).count() == 1


def test_it_reports_what_the_reconciler_did(db):
    out = io.StringIO()
    call_command("reconcile", stdout=out)
    assert "0 job nodes lost" in out.getvalue()


@pytest.mark.parametrize(
    "args, message",
    [(["--cluster", "nope"], "no cluster named 'nope'"), (["--cluster", "cpu", "--gpus", "0;rm"], "--gpus must be")],
)
def test_it_refuses_to_start_a_worker_for_a_bad_cluster_or_gpu_list(cluster, args, message):
    with pytest.raises(CommandError) as err:
        call_command("worker", *args)
    assert message in str(err.value)
