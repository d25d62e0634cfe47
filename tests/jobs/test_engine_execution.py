"""Jobs run by real `manage.py worker` processes on the real embedded Redis."""

import pytest

from jobs.models import JobNode, JobNodeStatus, read_log
from tracker.models import Artifact, RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def log_text(run):
    lines, _ = read_log(run, 0, 10000)
    return [line.text for line in lines]


def test_it_runs_a_script_to_completed_with_its_log_lines_args_and_outputs(submit_script, cluster, run_burst_worker, redis_conn):
    job = submit_script(
        "import os, sys\n"
        "print('hello from the script')\n"
        "print('argv', sys.argv[1:])\n"
        "print('secret?', os.environ.get('SECRET_KEY'), os.environ.get('DATABASE_URL'), os.environ.get('REDIS_URL'))\n"
        "print('run', os.environ['TORCHLIGHT_RUN_ID'], 'token', os.environ['TORCHLIGHT_TOKEN'][:3])\n"
        "print('user env', os.environ['GREETING'])\n"
        "os.makedirs('outputs/sub', exist_ok=True)\n"
        "open('outputs/model.txt', 'w').write('weights')\n"
        "open('outputs/sub/notes.txt', 'w').write('n')\n"
        "open('logs/train.log', 'w').write('from the log file\\n')\n"
        "print('to stderr', file=sys.stderr)\n",
        script_args=["--name", "; rm -rf /", "--x", "$(whoami)"],
        env_vars={"GREETING": "hi there"},
    )
    result = run_burst_worker(cluster)
    assert result.returncode == 0, result.stderr
    run = job.run
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED, run.status_reason
    assert run.preparing_at and run.scaling_at and run.running_at and run.post_processing_at and run.end_time
    text = log_text(run)
    assert "hello from the script" in text
    assert "argv ['--name', '; rm -rf /', '--x', '$(whoami)']" in text
    assert "secret? None None None" in text
    assert f"run {run.pk} token tl_" in text
    assert "user env hi there" in text
    assert "from the log file" in text
    lines, _ = read_log(run, 0, 10000)
    assert any(line.stream == "stderr" and line.text == "to stderr" for line in lines)
    assert set(Artifact.objects.filter(run=run).values_list("path", flat=True)) == {"outputs/model.txt", "outputs/sub/notes.txt"}
    node = JobNode.objects.get(job=job)
    assert node.status == JobNodeStatus.COMPLETED and node.exit_code == 0
    assert not run.tokens.filter(revoked_at__isnull=True).exists()


def test_it_fails_a_script_that_raises_with_exit_code_and_stderr_tail(submit_script, cluster, run_burst_worker, redis_conn):
    job = submit_script("print('starting')\nraise RuntimeError('the loss exploded')\n")
    result = run_burst_worker(cluster)
    assert result.returncode == 0, result.stderr
    run = job.run
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "exit code 1" in run.status_reason
    assert "RuntimeError: the loss exploded" in run.status_reason
    assert JobNode.objects.get(job=job).exit_code == 1
    assert "starting" in log_text(run)


def test_it_fails_at_preparing_when_the_entry_script_is_missing(submit_script, cluster, run_burst_worker, redis_conn):
    job = submit_script("print(1)\n", entry_script="train.py")
    job.entry_script = "other.py"
    job.save(update_fields=["entry_script"])
    run_burst_worker(cluster)
    job.run.refresh_from_db()
    assert job.run.status == RunStatus.FAILED
    assert "other.py" in job.run.status_reason and job.run.running_at is None


def test_it_runs_a_job_only_once_when_its_rq_job_is_delivered_twice(submit_script, cluster, run_burst_worker, redis_conn):
    from jobs.services import enqueue_job

    job = submit_script("print('once')\n")
    result = run_burst_worker(cluster)
    assert result.returncode == 0
    # A second delivery of the same node (e.g. re-enqueued by mistake) finds the slot taken.
    from jobs.tasks import run_job_node

    assert run_job_node(job.pk, 0, 1) == "not-claimed"
    assert not enqueue_job(job.pk)  # terminal runs are never enqueued again
    assert log_text(job.run).count("once") == 1


def test_it_hands_the_resume_checkpoint_to_the_script_and_links_the_parent_run(
    submit_script, cluster, run_burst_worker, make_run, redis_conn
):
    import io

    from tracker.services import store_artifact

    parent = make_run(name="first", status=RunStatus.COMPLETED)
    checkpoint = store_artifact(parent, "outputs/checkpoint.pt", io.BytesIO(b"epoch=3"))
    job = submit_script(
        "import os\nprint('resume', os.path.basename(os.environ['TORCHLIGHT_RESUME_FROM']), open(os.environ['TORCHLIGHT_RESUME_FROM']).read())\n",
        resume_from=checkpoint,
    )
    run_burst_worker(cluster)
    job.run.refresh_from_db()
    assert job.run.status == RunStatus.COMPLETED, job.run.status_reason
    assert job.run.parent_run_id == parent.pk
    assert "resume checkpoint.pt epoch=3" in log_text(job.run)


def test_it_refuses_late_writes_from_a_stale_attempt(submit_script, redis_conn):
    job = submit_script("print(1)\n")
    node = JobNode.objects.get(job=job)
    stale = JobNode.objects.get(pk=node.pk)
    JobNode.objects.filter(pk=node.pk).update(attempt=2)  # the reconciler moved on to attempt 2
    assert not stale.claim(1, None)
    assert not stale.set_status(JobNodeStatus.FAILED, reason="late")
    node.refresh_from_db()
    assert (node.status, node.attempt, node.reason) == (JobNodeStatus.PENDING, 2, "")
    assert node.claim(2, None)
    assert not JobNode.objects.get(pk=node.pk).claim(2, None)  # claimed once only
