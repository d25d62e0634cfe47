"""Who may call the MLflow API: bearer tokens only, members only, writers only where it writes."""

import json

import pytest

from tracker.models import ApiToken, Experiment, Run

pytestmark = pytest.mark.django_db


def call(client, method, url, token=None, body=None, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    if method == "get":
        return client.get(url, body or {}, **headers, **extra)
    return getattr(client, method)(url, json.dumps(body or {}), content_type="application/json", **headers, **extra)


def token_for(user):
    return ApiToken.mint(user, "mlflow")[1]


def test_it_answers_401_without_a_token_even_with_a_session(client, owner, workspace):
    client.force_login(owner)
    response = call(client, "get", "/api/2.0/mlflow/experiments/get", body={"experiment_id": "0"})
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHENTICATED"
    response = call(client, "get", "/api/2.0/mlflow/experiments/get", token="tl_not-a-token", body={"experiment_id": "0"})
    assert response.status_code == 401


def test_it_accepts_the_token_as_a_basic_auth_password(client, owner, workspace):
    import base64

    raw = token_for(owner)
    basic = base64.b64encode(f"olivia:{raw}".encode()).decode()
    response = client.get("/api/2.0/mlflow/experiments/get", {"experiment_id": "0"}, HTTP_AUTHORIZATION=f"Basic {basic}")
    assert response.status_code == 200 and response.json()["experiment"]["name"] == "Default"


def test_it_hides_other_workspaces_runs_with_404(client, owner, outsider, run):
    response = call(client, "get", "/api/2.0/mlflow/runs/get", token=token_for(outsider), body={"run_id": run.id.hex})
    assert response.status_code == 404
    assert response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    response = call(client, "get", "/api/2.0/mlflow/experiments/get", token=token_for(outsider), body={"experiment_id": str(run.experiment_id)})
    assert response.status_code == 404
    response = call(client, "post", "/api/2.0/mlflow/runs/log-metric", token=token_for(outsider),
                    body={"run_id": run.id.hex, "key": "x", "value": 1, "timestamp": 0, "step": 0})  # fmt: skip
    assert response.status_code == 404
    assert not run.metric_series.exists()


def test_it_lets_readers_read_but_not_write(client, reader, run):
    token = token_for(reader)
    assert call(client, "get", "/api/2.0/mlflow/runs/get", token=token, body={"run_id": run.id.hex}).status_code == 200
    response = call(client, "post", "/api/2.0/mlflow/runs/log-parameter", token=token, body={"run_id": run.id.hex, "key": "a", "value": "1"})
    assert response.status_code == 403
    assert response.json()["error_code"] == "PERMISSION_DENIED"
    response = call(client, "post", "/api/2.0/mlflow/experiments/create", token=token, body={"name": "mine"})
    assert response.status_code == 403
    assert not run.params.exists()
    assert not Experiment.objects.filter(name="mine").exists()


def test_it_puts_objects_in_the_workspace_named_by_the_setting(client, owner, workspace, other_workspace, monkeypatch):
    other_workspace.add_member(owner, "owner")
    token = token_for(owner)
    monkeypatch.setenv("TORCHLIGHT_MLFLOW_WORKSPACE", "other")
    response = call(client, "post", "/api/2.0/mlflow/experiments/create", token=token, body={"name": "elsewhere"})
    assert response.status_code == 200
    assert Experiment.objects.get(pk=int(response.json()["experiment_id"])).workspace == other_workspace
    monkeypatch.setenv("TORCHLIGHT_MLFLOW_WORKSPACE", "nope")
    response = call(client, "post", "/api/2.0/mlflow/experiments/create", token=token, body={"name": "lost"})
    assert response.status_code == 404
    assert "TORCHLIGHT_MLFLOW_WORKSPACE" in response.json()["message"]


def test_it_limits_a_run_token_to_its_run(client, owner, run, make_run):
    _token, raw = ApiToken.mint(owner, "job", run=run)
    other = make_run(name="other")
    response = call(client, "post", "/api/2.0/mlflow/runs/log-metric", token=raw,
                    body={"run_id": run.id.hex, "key": "loss", "value": 0.5, "timestamp": 1, "step": 3})  # fmt: skip
    assert response.status_code == 200
    assert run.metric_series.get(key="loss").last_step == 3
    assert call(client, "get", "/api/2.0/mlflow/runs/get", token=raw, body={"run_id": other.id.hex}).status_code == 404
    response = call(client, "post", "/api/2.0/mlflow/runs/create", token=raw, body={"experiment_id": str(run.experiment_id)})
    assert response.status_code == 403
    # The job, not the script, gives a job's run its final status.
    call(client, "post", "/api/2.0/mlflow/runs/update", token=raw, body={"run_id": run.id.hex, "status": "FINISHED"})
    assert Run.objects.get(pk=run.pk).status == "running"


def test_it_rejects_junk_with_400_not_500(client, owner, run):
    token = token_for(owner)
    url = "/api/2.0/mlflow/runs/log-batch"
    bad_bodies = [
        {"run_id": run.id.hex, "metrics": [{"key": "a", "value": "abc", "timestamp": 0, "step": 0}]},
        {"run_id": run.id.hex, "metrics": [{"key": "a", "value": 1, "timestamp": "soon", "step": 0}]},
        {"run_id": run.id.hex, "metrics": [{"key": "a", "value": 1, "timestamp": 0, "step": -1}]},
        # The fast path's shape (float value, int64s as protobuf JSON strings) with one thing wrong:
        {"run_id": run.id.hex, "metrics": [{"key": "a", "value": 1.5, "timestamp": "0", "step": "-1"}]},
        {"run_id": run.id.hex, "metrics": [{"key": "a", "value": 1.5, "timestamp": "soon", "step": "0"}]},
        {"run_id": run.id.hex, "metrics": [{"key": " ", "value": 1.5, "timestamp": "0", "step": "0"}]},
        {"run_id": run.id.hex, "metrics": [{"key": "bad\nkey", "value": 1.5, "timestamp": "0", "step": "0"}]},
        {"run_id": run.id.hex, "metrics": [{"key": "good", "value": 1.5, "timestamp": "0", "step": "0"},
                                           {"key": "a", "value": 1.5, "timestamp": "0", "step": "1.5"}]},
        {"run_id": run.id.hex, "metrics": "all of them"},
        {"run_id": run.id.hex, "params": [{"value": "no key"}]},
        {"run_id": run.id.hex, "tags": [{"key": "mlflow.torchlight.model.x", "value": "forged"}]},
        {"run_id": "not-a-run"},
        {},
    ]
    for body in bad_bodies:
        response = call(client, "post", url, token=token, body=body)
        assert 400 <= response.status_code < 500, body
        assert response.json()["error_code"] in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"), body
    response = client.post(url, "{not json", content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 400 and response.json()["error_code"] == "BAD_REQUEST"
    response = call(client, "get", "/api/2.0/mlflow/metrics/get-history", token=token,
                    body={"run_id": run.id.hex, "metric_key": "a", "page_token": "%%%"})  # fmt: skip
    assert response.status_code == 400
    assert not run.metric_series.exists() and not run.params.exists() and not run.tags.exists()


def test_it_refuses_artifact_paths_that_escape(client, owner, run):
    token = token_for(owner)
    base = f"/api/2.0/mlflow-artifacts/artifacts/{run.experiment_id}/{run.id.hex}/artifacts"
    for path in ("../../etc/passwd", "a/../../b", "dir\\file"):
        response = client.put(f"{base}/{path}", b"x", content_type="application/octet-stream", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code in (400, 404), path
    assert not run.artifacts.exists()
    response = client.put(f"{base}/ok/file.txt", b"hello", content_type="text/plain", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    response = client.get(f"{base}/ok/file.txt", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert b"".join(response.streaming_content) == b"hello"
    assert client.get(f"{base}/ok/missing.txt", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 404
