"""MLflow 3 logged models: kept on their run, searchable, taggable, deletable."""

import io
import json

import pytest

from tracker import services
from tracker.models import ApiToken, Artifact, Run, RunStatus, RunTag

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(owner):
    return ApiToken.mint(owner, "mlflow")[1]


def send(client, token, method, url, body=None):
    if method == "get":
        return client.get(url, body or {}, HTTP_AUTHORIZATION=f"Bearer {token}")
    return getattr(client, method)(url, json.dumps(body or {}), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")


def test_it_keeps_a_logged_model_on_its_run(client, token, run):
    eid = str(run.experiment_id)
    created = send(client, token, "post", "/api/2.0/mlflow/logged-models",
                   {"experiment_id": eid, "name": "net", "source_run_id": run.id.hex,
                    "tags": [{"key": "stage", "value": "dev"}], "params": [{"key": "depth", "value": "3"}]})  # fmt: skip
    assert created.status_code == 200, created.content
    model = created.json()["model"]["info"]
    model_id = model["model_id"]
    assert model["status"] == "LOGGED_MODEL_PENDING" and model["source_run_id"] == run.id.hex
    assert model["artifact_uri"] == f"mlflow-artifacts:/{eid}/{run.id.hex}/artifacts/models/{model_id}"
    services.store_artifact(run, f"models/{model_id}/MLmodel", io.BytesIO(b"flavors: {}\n"))

    done = send(client, token, "patch", f"/api/2.0/mlflow/logged-models/{model_id}", {"model_id": model_id, "status": "LOGGED_MODEL_READY"})
    assert done.json()["model"]["info"]["status"] == "LOGGED_MODEL_READY"
    send(client, token, "patch", f"/api/2.0/mlflow/logged-models/{model_id}/tags", {"tags": [{"key": "stage", "value": "prod"}]})
    found = send(client, token, "post", "/api/2.0/mlflow/logged-models/search",
                 {"experiment_ids": [eid], "filter": "name = 'net' AND tags.stage = 'prod'"}).json()["models"]  # fmt: skip
    assert [m["info"]["model_id"] for m in found] == [model_id]
    assert found[0]["data"]["params"] == [{"key": "depth", "value": "3"}]
    none = send(client, token, "post", "/api/2.0/mlflow/logged-models/search", {"experiment_ids": [eid], "filter": "name = 'other'"})
    assert none.json()["models"] == []
    bad = send(client, token, "post", "/api/2.0/mlflow/logged-models/search", {"experiment_ids": [eid], "filter": "name ~ 1"})
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    listing = send(client, token, "get", f"/api/2.0/mlflow/logged-models/{model_id}/artifacts/directories")
    assert [f["path"] for f in listing.json()["files"]] == ["MLmodel"]

    # The model's record is a hidden tag: MLflow clients never see it among the run's tags.
    tags = send(client, token, "get", "/api/2.0/mlflow/runs/get", {"run_id": run.id.hex}).json()["run"]["data"]["tags"]
    assert not any(t["key"].startswith("mlflow.torchlight.") for t in tags)

    assert send(client, token, "delete", f"/api/2.0/mlflow/logged-models/{model_id}").status_code == 200
    assert send(client, token, "get", f"/api/2.0/mlflow/logged-models/{model_id}").status_code == 404
    assert not Artifact.objects.filter(run=run, path__startswith="models/").exists()


def test_it_gives_a_model_logged_outside_a_run_a_run_of_its_own(client, token, experiment):
    created = send(client, token, "post", "/api/2.0/mlflow/logged-models", {"experiment_id": str(experiment.pk), "name": "loose"})
    model_id = created.json()["model"]["info"]["model_id"]
    holder = RunTag.objects.get(key=f"mlflow.torchlight.model.{model_id}").run
    assert holder.experiment == experiment and holder.name == "loose"
    assert Run.objects.get(pk=holder.pk).status == RunStatus.COMPLETED


def test_it_hides_models_of_other_workspaces(client, token, outsider, run):
    created = send(client, token, "post", "/api/2.0/mlflow/logged-models", {"experiment_id": str(run.experiment_id), "source_run_id": run.id.hex})
    model_id = created.json()["model"]["info"]["model_id"]
    other = ApiToken.mint(outsider, "mlflow")[1]
    response = send(client, other, "get", f"/api/2.0/mlflow/logged-models/{model_id}")
    assert response.status_code == 404 and response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    assert send(client, token, "get", "/api/2.0/mlflow/logged-models/m-not-an-id").status_code == 404
