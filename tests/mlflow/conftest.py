"""The real `mlflow` client against a live Torchlight server (pytest-django's live_server)."""

import pytest

mlflow = pytest.importorskip("mlflow")

from tracker.models import ApiToken  # noqa: E402


@pytest.fixture
def mlflow_token(owner):
    _token, raw = ApiToken.mint(owner, "mlflow")
    return raw


@pytest.fixture
def tracking(live_server, workspace, owner, mlflow_token, monkeypatch, tmp_path):
    """The mlflow client pointed at the live server with the owner's token; fails fast instead of retrying."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", live_server.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", mlflow_token)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("TORCHLIGHT_MLFLOW_WORKSPACE", raising=False)
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(live_server.url)
    mlflow.set_registry_uri(live_server.url)
    yield mlflow.MlflowClient(live_server.url)
    while mlflow.active_run():
        mlflow.end_run()
    import mlflow.tracking.fluent as fluent

    fluent._active_experiment_id = None
    mlflow.set_tracking_uri("")
