"""The run page's job panel: live log by offset, cancel, clone and edit, running jobs on the home page."""

import pytest
from rq import Queue

from jobs.models import ComputeCluster, Job, write_log
from jobs.services import submit_job
from tracker.models import Run, RunStatus


@pytest.fixture
def cluster(workspace):
    return ComputeCluster.objects.create(workspace=workspace, name="cpu", max_nodes=2)


@pytest.fixture
def job(owner, experiment, cluster, redis_conn):
    return submit_job(user=owner, experiment=experiment, cluster=cluster, entry_script="train.py", source_kind="example",
                      example_name="digits", script_args=["--epochs", "2", "--note", "; rm -rf /"], run_name="digits-1",
                      env_vars={"MY_FLAG": "1"}, node_count=2, procs_per_node=1, max_duration_seconds=600,
                      idempotency_key="panel-test")


def test_it_returns_log_lines_after_an_offset(login, reader, job):
    write_log(job.run_id, [{"node_rank": 0, "rank": 0, "text": "epoch 1"}, {"node_rank": 1, "rank": 1, "text": "<script>x</script>"}])
    client = login(reader)
    data = client.get(f"/runs/{job.run_id}/logs.json").json()
    assert [line["text"] for line in data["lines"]] == ["epoch 1", "<script>x</script>"]
    assert data["live"] is True and data["status"] == "queued"
    offset = data["next_offset"]
    again = client.get(f"/runs/{job.run_id}/logs.json?after={offset}").json()
    assert again["lines"] == [] and again["next_offset"] == offset
    write_log(job.run_id, [{"node_rank": 0, "rank": 0, "stream": "stderr", "text": "epoch 2"}])
    newer = client.get(f"/runs/{job.run_id}/logs.json?after={offset}").json()
    assert [(line["text"], line["stream"]) for line in newer["lines"]] == [("epoch 2", "stderr")]
    assert newer["next_offset"] > offset


def test_it_filters_the_log_by_node_and_rank(login, reader, job):
    write_log(job.run_id, [{"node_rank": 0, "rank": 0, "text": "a"}, {"node_rank": 1, "rank": 1, "text": "b"},
                           {"node_rank": 1, "rank": 1, "text": "c"}])
    client = login(reader)
    assert [x["text"] for x in client.get(f"/runs/{job.run_id}/logs.json?node=1").json()["lines"]] == ["b", "c"]
    assert [x["text"] for x in client.get(f"/runs/{job.run_id}/logs.json?rank=0").json()["lines"]] == ["a"]
    limited = client.get(f"/runs/{job.run_id}/logs.json?limit=2").json()
    assert len(limited["lines"]) == 2 and limited["more"] is True


def test_it_refuses_a_negative_offset_and_hides_logs_from_outsiders(login, reader, outsider, job):
    assert login(reader).get(f"/runs/{job.run_id}/logs.json?after=-4").status_code == 400
    assert login(outsider).get(f"/runs/{job.run_id}/logs.json").status_code == 404


def test_it_shows_the_job_panel_with_cancel_and_clone_to_contributors(login, contributor, job):
    body = login(contributor).get(f"/runs/{job.run_id}/").content.decode()
    assert 'id="job-panel"' in body
    assert f'data-logs-url="/runs/{job.run_id}/logs.json"' in body
    assert f'action="/runs/{job.run_id}/cancel"' in body
    assert f"/w/vision/jobs/new?clone={job.run_id}" in body
    assert "; rm -rf /" in body  # the argv is shown, escaped by the template
    assert "js/jobs_log.js" in body
    assert body.count('<tr>\n        <td>') >= 2  # one row per node


def test_it_shows_no_cancel_button_to_readers_and_refuses_their_cancel(login, reader, job, redis_conn):
    client = login(reader)
    body = client.get(f"/runs/{job.run_id}/").content.decode()
    assert 'id="job-panel"' in body and "/cancel" not in body
    assert client.post(f"/runs/{job.run_id}/cancel").status_code == 403
    assert Run.objects.get(pk=job.run_id).status == RunStatus.QUEUED


def test_it_shows_nothing_for_a_run_without_a_job(login, owner, run):
    body = login(owner).get(f"/runs/{run.pk}/").content.decode()
    assert 'id="job-panel"' not in body


def test_it_cancels_a_queued_job_from_the_run_page(login, contributor, job, cluster, redis_conn, django_capture_on_commit_callbacks):
    from jobs.services import enqueue_job

    enqueue_job(job.pk)
    assert Queue(cluster.queue_name, connection=redis_conn).count == 2
    client = login(contributor)
    assert client.get(f"/runs/{job.run_id}/cancel").status_code == 405
    response = client.post(f"/runs/{job.run_id}/cancel")
    assert response.status_code == 302 and response["Location"] == f"/runs/{job.run_id}/"
    run = Run.objects.get(pk=job.run_id)
    assert run.status == RunStatus.CANCELED
    assert Queue(cluster.queue_name, connection=redis_conn).count == 0
    again = client.post(f"/runs/{job.run_id}/cancel", follow=True)
    assert "had already finished" in again.content.decode()


def test_it_prefills_the_form_when_cloning(login, contributor, job, workspace):
    body = login(contributor).get(f"/w/{workspace.slug}/jobs/new?clone={job.run_id}").content.decode()
    assert "Cloned from" in body
    assert 'name="script_args_name" value="--note"' in body
    assert 'name="script_args_value" value="; rm -rf /"' in body
    assert 'name="env_vars_name" value="MY_FLAG"' in body
    assert 'name="node_count" value="2"' in body
    assert 'name="max_duration_seconds" value="600"' in body
    assert 'value="digits-1 (clone)"' in body
    assert f'<option value="{job.cluster_id}" selected>' in body


def test_it_clones_an_uploaded_source_without_a_new_upload(login, owner, contributor, experiment, cluster, workspace,
                                                           redis_conn, django_capture_on_commit_callbacks):
    import io

    first = submit_job(user=owner, experiment=experiment, cluster=cluster, entry_script="main.py", source_kind="upload",
                       source_upload=(io.BytesIO(b"print('hello')"), "main.py"))
    client = login(contributor)
    body = client.get(f"/w/{workspace.slug}/jobs/new?clone={first.run_id}").content.decode()
    assert "main.py" in body
    source_id = body.split('name="source_id" value="')[1].split('"')[0]
    data = {"token": "clone-token-123", "experiment": str(experiment.pk), "source_kind": "upload", "source_id": source_id,
            "entry_script": "main.py", "cluster": str(cluster.pk), "node_count": "1", "procs_per_node": "1", "backend": "gloo"}
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/w/{workspace.slug}/jobs/new", data)
    assert response.status_code == 302
    clone = Job.objects.exclude(pk=first.pk).get()
    assert clone.source_filename == "main.py" and clone.source_blob_key and clone.source_blob_key != first.source_blob_key
    # A forged id is refused.
    data["token"], data["source_id"] = "clone-token-456", source_id[:-3] + "xyz"
    assert client.post(f"/w/{workspace.slug}/jobs/new", data).status_code == 400


def test_it_refuses_to_clone_a_run_of_another_workspace(login, outsider, contributor, job, workspace, run):
    assert login(outsider).get(f"/w/other/jobs/new?clone={job.run_id}").status_code == 404
    assert login(contributor).get(f"/w/{workspace.slug}/jobs/new?clone={run.pk}").status_code == 404  # no job


def test_it_lists_running_jobs_on_the_workspace_home(login, reader, job, workspace, make_run):
    finished = submit_job(user=job.submitted_by, experiment=job.run.experiment, cluster=job.cluster, entry_script="train.py",
                          source_kind="example", example_name="digits", run_name="old-one")
    finished.run.finish(RunStatus.COMPLETED)
    Run.objects.filter(pk=job.run_id).update(progress_current=1, progress_total=4)
    body = login(reader).get(f"/w/{workspace.slug}/").content.decode()
    table = body.split('id="running-jobs"')[1].split("</table>")[0]
    assert "digits-1" in table and "old-one" not in table
    assert '<progress max="1" value="0.2500">' in table


def test_it_serves_an_example_as_a_zip(login, reader):
    response = login(reader).get("/examples/digits.zip")
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert login(reader).get("/examples/nope.zip").status_code == 404
