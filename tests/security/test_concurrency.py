"""Concurrency without loss: a real server, 16 processes into one run and 16 into separate runs.

The full 30-second run is bench/concurrency_bench.py (results in bench/README.md);
the test runs the same harness for 8 seconds.
"""

import json
import subprocess
import sys
import uuid

import pytest
from django.conf import settings

from tracker.models import ApiToken, MetricPoint, MetricSeries


@pytest.mark.slow
def test_it_loses_and_duplicates_nothing_under_32_concurrent_writers_on_sqlite(tmp_path):
    out = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "bench/concurrency_bench.py", "--seconds", "8", "--processes", "16", "--json", str(out)],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=900,
    )
    assert out.exists(), result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["database"] == "sqlite"
    assert report["processes"] == 32
    assert report["points_sent"] > 0 and report["shared_run_points"] > 0
    assert report["database_locked"] == 0, report["failure_samples"]
    assert report["server_errors_5xx"] == 0 and report["failed_requests"] == 0, report["failure_samples"]
    assert report["points_stored"] == report["points_sent"], report["mismatched_runs"]
    assert report["mismatched_runs"] == {}
    assert report["retries"] > 0 and report["retries_recognised"] == report["retries"]
    assert result.returncode == 0


@pytest.fixture
def api(client, owner):
    _, raw = ApiToken.mint(owner, "retry")
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {raw}"
    return client


def test_it_stores_a_retried_batch_once(api, run):
    body = {"points": [{"key": "loss", "value": i / 10, "step": i} for i in range(50)], "idempotency_key": uuid.uuid4().hex}
    url = f"/api/v1/runs/{run.id}/metrics"
    first = api.post(url, json.dumps(body), content_type="application/json")
    assert first.status_code == 200 and first.json()["stored"] == 50 and not first.json()["duplicate"]
    for _ in range(3):
        again = api.post(url, json.dumps(body), content_type="application/json")
        assert again.status_code == 200 and again.json()["duplicate"] is True
    assert MetricPoint.objects.filter(series__run=run).count() == 50
    assert MetricSeries.objects.get(run=run, key="loss").count == 50
    body["idempotency_key"] = uuid.uuid4().hex  # a new batch with a new key is stored
    assert api.post(url, json.dumps(body), content_type="application/json").json()["stored"] == 50
    assert MetricPoint.objects.filter(series__run=run).count() == 100


def test_it_refuses_an_oversized_metric_batch_and_stores_nothing(api, run):
    from tracker.metric_store import MAX_POINTS_PER_BATCH

    body = {"points": [{"key": "loss", "value": 1.0, "step": i} for i in range(MAX_POINTS_PER_BATCH + 1)]}
    response = api.post(f"/api/v1/runs/{run.id}/metrics", json.dumps(body), content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "batch_too_large"
    assert not MetricPoint.objects.filter(series__run=run).exists()
