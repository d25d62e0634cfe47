"""Submit the digits example through the form and watch a real worker run it to Completed."""

import importlib.util

import pytest

from jobs.models import Job
from tracker.models import Artifact, MetricSeries, RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_it_runs_the_digits_example_submitted_through_the_form(login, contributor, workspace, experiment, cluster,
                                                                run_burst_worker, redis_conn, live_server, tmp_path):
    client = login(contributor)
    form = client.get(f"/w/{workspace.slug}/jobs/new").content.decode()
    token = form.split('name="token" value="')[1].split('"')[0]
    data = {
        "token": token, "experiment": str(experiment.pk), "run_name": "digits from the form", "source_kind": "example",
        "example_name": "digits", "entry_script": "train.py", "script_args_name": ["--epochs", "--batch-size"],
        "script_args_value": ["1", "128"], "cluster": str(cluster.pk), "node_count": "1", "procs_per_node": "1",
        "backend": "gloo", "max_duration_seconds": "600",
    }
    response = client.post(f"/w/{workspace.slug}/jobs/new", data)
    assert response.status_code == 302
    assert client.post(f"/w/{workspace.slug}/jobs/new", data).status_code == 302  # double click: still one run
    job = Job.objects.select_related("run").get()

    # The script logs through tracker.client to this test's live server (TORCHLIGHT_URL comes from the site URL).
    result = run_burst_worker(cluster, timeout=480, env={"TORCHLIGHT_SITE_URL": live_server.url,
                                                         "TORCHLIGHT_SPOOL_DIR": str(tmp_path / "spool")})
    assert result.returncode == 0, result.stderr[-3000:]
    run = job.run
    run.refresh_from_db()
    logs = client.get(f"/runs/{run.pk}/logs.json").json()
    text = "\n".join(line["text"] for line in logs["lines"])
    assert run.status == RunStatus.COMPLETED, f"{run.status_reason}\n{text[-3000:]}"
    assert "epoch 1/1" in text and "training on" in text
    assert logs["live"] is False
    paths = set(Artifact.objects.filter(run=run).values_list("path", flat=True))
    assert {"outputs/model.pt", "outputs/model_full.pt", "outputs/checkpoint.pt"} <= paths
    if importlib.util.find_spec("tracker.client") is not None:
        keys = set(MetricSeries.objects.filter(run=run).values_list("key", flat=True))
        assert {"train/loss", "train/accuracy", "val/loss", "val/accuracy"} <= keys
        assert run.progress_fraction == 1
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert 'id="job-panel"' in page and "Clone and edit" in page and f"/runs/{run.pk}/cancel" not in page
