import hashlib
import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from registry import services
from registry.models import ModelFile, ModelVersion, OnnxExport, RegisteredModel
from tests.registry.conftest import add_artifact
from tracker import storage

pytestmark = pytest.mark.django_db

REGISTER = {
    "path": "outputs/model.pt", "name": "pt-dnn", "flavour": "state_dict", "architecture": "digits_model:DigitsCNN",
    "arch_args": "width=8", "input_shape": "1,1,8,8", "input_dtype": "float32",
}


@pytest.fixture
def version(digits_run, owner):
    return services.register_from_run(
        run=digits_run, path="outputs/model.pt", name="pt-dnn", user=owner, architecture="digits_model:DigitsCNN",
        arch_kwargs={"width": 8}, input_shape=[1, 1, 8, 8],
    )


def body(response):
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_it_registers_from_the_run_page_form(digits_run, owner, login):
    client = login(owner)
    page = client.get(f"/runs/{digits_run.id}/")
    if page.status_code == 200:  # the run page (PAGES) includes the panel
        assert b"Register model" in page.content and b"outputs/model.pt" in page.content
    response = client.post(f"/runs/{digits_run.id}/register-model/", REGISTER)
    version = ModelVersion.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/models/{version.model_id}/versions/1/"
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert version.files.get().sha256.encode() in page.content
    assert b"digits_model:DigitsCNN" in page.content


@pytest.mark.parametrize(
    "path", ["../outputs/model.pt", "/etc/passwd", "outputs/../../x", "%2e%2e%2foutputs/model.pt", "..%2fmodel.pt", "nope.pt"]
)
def test_it_answers_404_for_paths_outside_the_runs_artifacts(digits_run, owner, login, path):
    response = login(owner).post(f"/runs/{digits_run.id}/register-model/", {**REGISTER, "path": path})
    assert response.status_code == 404
    assert not ModelVersion.objects.exists()


def test_it_shows_not_a_pytorch_file_on_the_form(run, owner, login):
    add_artifact(run, "outputs/model.pt", b"<html>oops</html>")
    response = login(owner).post(f"/runs/{run.id}/register-model/", REGISTER)
    assert response.status_code == 400
    assert b"not a PyTorch file" in response.content
    assert not ModelVersion.objects.exists()


def test_it_requires_the_trust_box_for_full_pickles_on_upload(workspace, owner, login):
    upload = SimpleUploadedFile("model.pt", b"\x80\x04whatever")
    response = login(owner).post(
        "/w/vision/models/register/", {"file": upload, "name": "p", "flavour": "full_pickle", "input_dtype": "float32"}
    )
    assert response.status_code == 400
    assert b"I trust this file: loading it runs code" in response.content
    assert b"tick the box" in response.content
    assert not ModelVersion.objects.exists()


def test_it_lets_readers_look_but_not_register(digits_run, version, reader, login):
    client = login(reader)
    assert client.get("/w/vision/models/").status_code == 200
    assert client.get(f"/models/{version.model_id}/").status_code == 200
    assert client.get(f"/models/{version.model_id}/versions/1/").status_code == 200
    assert client.post(f"/runs/{digits_run.id}/register-model/", REGISTER).status_code == 403
    assert client.post(f"/models/{version.model_id}/aliases/", {"alias": "production", "version": 1}).status_code == 403
    assert client.post(f"/models/{version.model_id}/delete/").status_code == 403
    assert client.post(f"/models/{version.model_id}/versions/1/export/", {"opset": 18}).status_code == 403


def test_it_hides_everything_from_outsiders(digits_run, version, outsider, login):
    client = login(outsider)
    f = version.files.get()
    for url in [
        "/w/vision/models/", f"/models/{version.model_id}/", f"/models/{version.model_id}/versions/1/",
        f"/models/{version.model_id}/versions/1/files/{f.pk}/download", f"/models/{version.model_id}/versions/1/download.zip",
    ]:
        assert client.get(url).status_code == 404, url
    assert client.post(f"/runs/{digits_run.id}/register-model/", REGISTER).status_code == 404
    assert client.post(f"/models/{version.model_id}/delete/").status_code == 404


def test_it_downloads_a_file_with_etag_and_range(version, owner, login):
    client = login(owner)
    f = version.files.get()
    url = f"/models/{version.model_id}/versions/1/files/{f.pk}/download"
    response = client.get(url)
    data = body(response)
    assert response.status_code == 200
    assert hashlib.sha256(data).hexdigest() == f.sha256
    assert response["ETag"] == f'"{f.sha256}"'
    assert response["Content-Disposition"].startswith('attachment; filename="model.pt"')
    assert response["X-Content-Type-Options"] == "nosniff"
    assert client.get(url, HTTP_IF_NONE_MATCH=f'"{f.sha256}"').status_code == 304
    partial = client.get(url, HTTP_RANGE="bytes=10-99")
    assert partial.status_code == 206
    assert partial["Content-Range"] == f"bytes 10-99/{f.size}"
    assert body(partial) == data[10:100]
    assert body(client.get(url, HTTP_RANGE="bytes=-16")) == data[-16:]
    assert client.get(url, HTTP_RANGE=f"bytes={f.size + 5}-").status_code == 416


def test_it_downloads_a_version_as_a_streamed_zip(digits_run, owner, login):
    version = services.register_from_run(run=digits_run, path="outputs/", name="folder", user=owner, validate=False)
    response = login(owner).get(f"/models/{version.model_id}/versions/1/download.zip")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(body(response)))
    assert archive.testzip() is None
    for f in version.files.all():
        assert hashlib.sha256(archive.read(f.path)).hexdigest() == f.sha256


def test_it_sets_and_moves_aliases_from_the_model_page(digits_run, version, owner, login):
    client = login(owner)
    services.register_from_run(run=digits_run, path="outputs/model.pt", name="pt-dnn", user=owner, validate=False)
    client.post(f"/models/{version.model_id}/aliases/", {"alias": "production", "version": 1})
    client.post(f"/models/{version.model_id}/aliases/", {"alias": "production", "version": 2})
    page = client.get(f"/models/{version.model_id}/")
    assert b"production moved from v1 to v2" in page.content
    response = client.post(f"/models/{version.model_id}/aliases/", {"alias": "bad alias!", "version": 1}, follow=True)
    assert b"alias" in response.content.lower()
    client.post(f"/models/{version.model_id}/aliases/production/delete/")
    assert not version.model.aliases.exists()


def test_it_asks_for_confirmation_before_deleting_a_model_with_an_alias(
    version, owner, login, django_capture_on_commit_callbacks
):
    client = login(owner)
    services.set_alias(model=version.model, alias="production", version=version)
    key = version.files.get().storage_key
    response = client.post(f"/models/{version.model_id}/delete/")
    assert response.status_code == 400
    assert b"Type the model" in response.content
    assert RegisteredModel.objects.exists() and storage.blob_exists(key)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/models/{version.model_id}/delete/", {"confirm": "pt-dnn"})
    assert response.status_code == 302
    assert not RegisteredModel.objects.exists() and not ModelFile.objects.exists()
    assert not storage.blob_exists(key)


def test_it_queues_an_export_from_the_version_page(version, owner, login, cluster, redis_conn):
    client = login(owner)
    page = client.get(f"/models/{version.model_id}/versions/1/")
    assert b"Export to ONNX" in page.content
    response = client.post(f"/models/{version.model_id}/versions/1/export/", {"opset": 17, "cluster": cluster.pk})
    assert response.status_code == 302
    export = OnnxExport.objects.get()
    assert export.opset == 17 and export.cluster == cluster
    status = client.get(f"/models/{version.model_id}/exports/{export.pk}.json").json()
    assert status["status"] == "queued" and status["result_version"] is None


def test_it_escapes_user_names(digits_run, owner, login):
    services.register_from_run(
        run=digits_run, path="outputs/model.pt", name="x", user=owner, validate=False, description="<script>alert(1)</script>"
    )
    page = login(owner).get(f"/models/{RegisteredModel.objects.get().pk}/versions/1/")
    assert b"<script>alert(1)</script>" not in page.content
    assert b"&lt;script&gt;" in page.content


def test_it_shows_the_model_list_in_constant_queries(digits_run, owner, login, django_assert_max_num_queries):
    for i in range(3):
        services.register_from_run(run=digits_run, path="outputs/model.pt", name=f"m{i}", user=owner, validate=False)
    client = login(owner)
    with django_assert_max_num_queries(12):
        assert client.get("/w/vision/models/").status_code == 200


def test_it_shows_model_and_version_pages_in_constant_queries(digits_run, owner, login, cluster, django_assert_max_num_queries):
    for _ in range(4):
        v = services.register_from_run(
            run=digits_run, path="outputs/", name="pt-dnn", user=owner, validate=False,
            architecture="digits_model:DigitsCNN", input_shape=[1, 1, 8, 8],
        )
        services.set_alias(model=v.model, alias=f"a{v.version}", version=v)
        OnnxExport.objects.create(source_version=v, cluster=cluster, opset=18)
    client = login(owner)
    with django_assert_max_num_queries(20):
        assert client.get(f"/models/{v.model_id}/").status_code == 200
    with django_assert_max_num_queries(25):
        assert client.get(f"/models/{v.model_id}/versions/{v.version}/").status_code == 200


def test_it_lists_recent_models_on_the_workspace_home(digits_run, version, owner, login):
    page = login(owner).get("/w/vision/")
    assert page.status_code == 200
    assert b"Recent models" in page.content and b"pt-dnn" in page.content


def test_it_edits_descriptions_but_nothing_else(version, owner, reader, login):
    client = login(reader)
    assert client.post(f"/models/{version.model_id}/versions/1/description/", {"description": "x"}).status_code == 403
    client = login(owner)
    client.post(f"/models/{version.model_id}/versions/1/description/", {"description": "best <b>so far</b>"})
    client.post(f"/models/{version.model_id}/description/", {"description": "digits classifier"})
    version.refresh_from_db()
    version.model.refresh_from_db()
    assert version.description == "best <b>so far</b>" and version.model.description == "digits classifier"
    assert b"best &lt;b&gt;so far&lt;/b&gt;" in client.get(f"/models/{version.model_id}/versions/1/").content
