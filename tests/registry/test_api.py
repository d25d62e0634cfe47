import hashlib
import io
import zipfile

import pytest

from registry import services
from registry.models import ModelVersion, OnnxExport
from tracker.models import ApiToken

pytestmark = pytest.mark.django_db

BODY = {
    "run_id": None, "path": "outputs/model.pt", "architecture": "digits_model:DigitsCNN",
    "arch_kwargs": {"width": 8}, "input_shape": [1, 1, 8, 8],
}


def auth(user, run=None):
    _, raw = ApiToken.mint(user, "t", run=run)
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def body(response):
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_it_registers_lists_and_downloads_through_the_api(client, digits_run, owner):
    headers = auth(owner)
    response = client.post(
        "/api/v1/models/pt-dnn/versions", {**BODY, "run_id": str(digits_run.id)}, content_type="application/json", **headers
    )
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["version"] == 1 and data["flavour"] == "state_dict" and data["run_id"] == str(digits_run.id)
    listing = client.get("/api/v1/models?workspace=vision", **headers).json()
    assert listing["models"][0]["name"] == "pt-dnn" and listing["models"][0]["latest_version"] == 1
    f = data["files"][0]
    download = client.get(f["download_url"], **headers)
    assert hashlib.sha256(body(download)).hexdigest() == f["sha256"]
    archive = zipfile.ZipFile(io.BytesIO(body(client.get(data["download_url"], **headers))))
    assert hashlib.sha256(archive.read("model.pt")).hexdigest() == f["sha256"]
    # a session never authenticates the API
    client.force_login(owner)
    assert client.get("/api/v1/models").status_code == 401


def test_it_reports_bad_registrations_as_json_errors(client, digits_run, run, owner):
    headers = auth(owner)
    url = "/api/v1/models/pt-dnn/versions"
    for path in ["../outputs/model.pt", "/etc/passwd", "%2e%2e/outputs/model.pt"]:
        response = client.post(url, {**BODY, "run_id": str(digits_run.id), "path": path}, content_type="application/json", **headers)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    response = client.post(url, {"path": "outputs/model.pt"}, content_type="application/json", **headers)
    assert response.status_code == 400
    response = client.post(
        url, {**BODY, "run_id": str(digits_run.id), "flavour": "full_pickle"}, content_type="application/json", **headers
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "untrusted_pickle"
    response = client.post(
        url, {**BODY, "run_id": str(digits_run.id), "input_shape": "1,x"}, content_type="application/json", **headers
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_input_shape"
    assert not ModelVersion.objects.exists()


def test_it_keeps_other_workspaces_out_and_readers_read_only(client, digits_run, owner, reader, outsider):
    version = services.register_from_run(run=digits_run, path="outputs/model.pt", name="pt-dnn", user=owner, validate=False)
    assert client.get("/api/v1/models/pt-dnn?workspace=vision", **auth(outsider)).status_code == 404
    assert client.get("/api/v1/models/pt-dnn/versions/1?workspace=vision", **auth(outsider)).status_code == 404
    response = client.post(
        "/api/v1/models/pt-dnn/versions", {**BODY, "run_id": str(digits_run.id)}, content_type="application/json", **auth(outsider)
    )
    assert response.status_code == 404
    headers = auth(reader)
    assert client.get("/api/v1/models/pt-dnn/versions/1", **headers).json()["version"] == 1
    response = client.put("/api/v1/models/pt-dnn/aliases/production", {"version": 1}, content_type="application/json", **headers)
    assert response.status_code == 403
    assert client.delete("/api/v1/models/pt-dnn", **headers).status_code == 403
    assert version.model.aliases.count() == 0


def test_it_moves_aliases_and_guards_deletion_through_the_api(client, digits_run, owner):
    services.register_from_run(run=digits_run, path="outputs/model.pt", name="pt-dnn", user=owner, validate=False)
    services.register_from_run(run=digits_run, path="outputs/model.pt", name="pt-dnn", user=owner, validate=False)
    headers = auth(owner)
    for n in (1, 2):
        response = client.put("/api/v1/models/pt-dnn/aliases/production", {"version": n}, content_type="application/json", **headers)
        assert response.status_code == 200
    assert client.get("/api/v1/models/pt-dnn/aliases/production", **headers).json()["version"] == 2
    response = client.put("/api/v1/models/pt-dnn/aliases/production", {"version": 9}, content_type="application/json", **headers)
    assert response.status_code == 404
    response = client.delete("/api/v1/models/pt-dnn", **headers)
    assert response.status_code == 409 and response.json()["error"]["code"] == "has_aliases"
    assert client.delete("/api/v1/models/pt-dnn?force=true", **headers).status_code == 200
    assert not ModelVersion.objects.exists()


def test_it_lets_a_run_token_register_only_from_its_own_run(client, digits_run, make_run, owner):
    other = make_run(name="other")
    headers = auth(owner, run=digits_run)
    response = client.post(
        "/api/v1/models/pt-dnn/versions", {**BODY, "run_id": str(other.id)}, content_type="application/json", **headers
    )
    assert response.status_code == 404
    response = client.post(
        "/api/v1/models/pt-dnn/versions", {**BODY, "run_id": str(digits_run.id)}, content_type="application/json", **headers
    )
    assert response.status_code == 201
    response = client.put("/api/v1/models/pt-dnn/aliases/production", {"version": 1}, content_type="application/json", **headers)
    assert response.status_code == 403


def test_it_queues_an_export_through_the_api(client, digits_run, owner, cluster, redis_conn):
    services.register_from_run(
        run=digits_run, path="outputs/model.pt", name="pt-dnn", user=owner, validate=False,
        architecture="digits_model:DigitsCNN", arch_kwargs={"width": 8}, input_shape=[1, 1, 8, 8],
    )
    headers = auth(owner)
    response = client.post("/api/v1/models/pt-dnn/versions/1/export", {"opset": 17}, content_type="application/json", **headers)
    assert response.status_code == 202
    export = OnnxExport.objects.get()
    assert response.json()["status"] == "queued" and export.opset == 17 and export.cluster == cluster
    assert client.get(f"/api/v1/exports/{export.pk}", **headers).json()["id"] == export.pk
    response = client.post("/api/v1/models/pt-dnn/versions/1/export", {"opset": 3}, content_type="application/json", **headers)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_opset"
    response = client.post("/api/v1/models/pt-dnn/versions/1/export", {"cluster": "nope"}, content_type="application/json", **headers)
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_cluster"
