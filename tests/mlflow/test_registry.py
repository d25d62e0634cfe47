"""mlflow model-registry calls on Torchlight's registry: sources, flavours from MLmodel, trust, errors."""

import io
import json

import pytest
import torch

from registry.models import Flavour, ModelVersion, RegisteredModel
from tracker import services
from tracker.mlflow_compat import api
from tracker.models import ApiToken

pytestmark = pytest.mark.django_db

MLMODEL = """artifact_path: model
flavors:
  pytorch:
    model_data: data
    pytorch_version: 2.4.0
  python_function:
    loader_module: mlflow.pytorch
signature:
  inputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3, 16, 16]}}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 2]}}]'
"""


def post(client, token, url, body, method="post"):
    return getattr(client, method)(url, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")


def log_model_files(run, folder, model_file="model.pth", mlmodel=MLMODEL):
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), buffer) if model_file == "model.pth" else torch.save({"w": torch.zeros(1)}, buffer)
    services.store_artifact(run, f"{folder}/MLmodel", io.BytesIO(mlmodel.encode()))
    services.store_artifact(run, f"{folder}/data/{model_file}", io.BytesIO(buffer.getvalue()))


@pytest.fixture
def token(owner):
    return ApiToken.mint(owner, "mlflow")[1]


def test_it_registers_a_run_folder_with_flavour_and_signature(client, token, run, workspace):
    log_model_files(run, "model")
    assert post(client, token, "/api/2.0/mlflow/registered-models/create", {"name": "resnet"}).status_code == 200
    response = post(client, token, "/api/2.0/mlflow/model-versions/create",
                    {"name": "resnet", "source": f"runs:/{run.id.hex}/model", "run_id": run.id.hex})  # fmt: skip
    assert response.status_code == 200, response.content
    body = response.json()["model_version"]
    assert body["version"] == "1" and body["status"] == "READY" and body["run_id"] == run.id.hex
    version = ModelVersion.objects.get(model__workspace=workspace, model__name="resnet", version=1)
    assert version.flavour == Flavour.FULL_PICKLE and version.trusted  # the owner logged it themselves
    assert version.input_shape == [1, 3, 16, 16] and version.input_dtype == "float32"
    assert sorted(f.path for f in version.files.all()) == ["MLmodel", "data/model.pth"]
    uri = client.get("/api/2.0/mlflow/model-versions/get-download-uri", {"name": "resnet", "version": "1"},
                     HTTP_AUTHORIZATION=f"Bearer {token}").json()["artifact_uri"]  # fmt: skip
    assert uri == f"mlflow-artifacts:/registered-models/{version.model_id}/versions/1"
    # Downloads come from the version's own (immutable) copy, not from the run.
    listing = client.get("/api/2.0/mlflow-artifacts/artifacts", {"path": uri.split(":/", 1)[1]}, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert [f["path"] for f in listing.json()["files"]] == ["data", "MLmodel"]
    run.artifacts.all().delete()
    download = client.get(f"/api/2.0/mlflow-artifacts/artifacts/{uri.split(':/', 1)[1]}/MLmodel", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert b"".join(download.streaming_content).decode() == MLMODEL


def test_it_refuses_another_users_pickle(client, contributor, run):
    log_model_files(run, "model")  # the run belongs to the owner
    raw = ApiToken.mint(contributor, "mlflow")[1]
    post(client, raw, "/api/2.0/mlflow/registered-models/create", {"name": "theirs"})
    response = post(client, raw, "/api/2.0/mlflow/model-versions/create", {"name": "theirs", "source": f"runs:/{run.id.hex}/model"})
    assert response.status_code == 403 and response.json()["error_code"] == "PERMISSION_DENIED"
    assert not ModelVersion.objects.exists()


def test_it_answers_registry_mistakes_with_mlflow_codes(client, token, run):
    log_model_files(run, "model", mlmodel="flavors:\n  sklearn:\n    pickled_model: model.pkl\n")
    response = post(client, token, "/api/2.0/mlflow/model-versions/create", {"name": "missing", "source": f"runs:/{run.id.hex}/model"})
    assert response.status_code == 404 and response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    post(client, token, "/api/2.0/mlflow/registered-models/create", {"name": "m"})
    response = post(client, token, "/api/2.0/mlflow/registered-models/create", {"name": "m"})
    assert response.status_code == 400 and response.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    response = post(client, token, "/api/2.0/mlflow/model-versions/create", {"name": "m", "source": f"runs:/{run.id.hex}/model"})
    assert response.status_code == 400 and "sklearn" in response.json()["message"]
    response = post(client, token, "/api/2.0/mlflow/model-versions/create", {"name": "m", "source": "s3://bucket/model"})
    assert response.status_code == 400 and response.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    response = post(client, token, "/api/2.0/mlflow/model-versions/create", {"name": "m", "source": f"runs:/{run.id.hex}/nothing"})
    assert response.status_code == 404
    response = client.get("/api/2.0/mlflow/model-versions/get", {"name": "m", "version": "7"}, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 404 and response.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    response = post(client, token, "/api/2.0/mlflow/registered-models/alias", {"name": "m", "alias": "prod", "version": "1"})
    assert response.status_code == 404
    assert RegisteredModel.objects.get(name="m").versions.count() == 0


def test_it_forgets_a_revoked_token(client, owner, workspace, monkeypatch):
    monkeypatch.setattr(api, "AUTH_CACHE_SECONDS", 0)
    token, raw = ApiToken.mint(owner, "mlflow")
    url = "/api/2.0/mlflow/experiments/get"
    assert client.get(url, {"experiment_id": "0"}, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    token.revoke()
    response = client.get(url, {"experiment_id": "0"}, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 401 and response.json()["error_code"] == "UNAUTHENTICATED"
