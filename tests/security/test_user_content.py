"""User content is served safely: downloads as attachments with nosniff, active types never inline, names escaped."""

import io

import pytest

from tracker import services
from tracker.models import ApiToken, Experiment, Run

XSS = "<script>alert(1)</script>"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
ACTIVE = {
    "report.html": b"<html><body>" + XSS.encode() + b"</body></html>",
    "plot.svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    "page.xhtml": b"<html xmlns='http://www.w3.org/1999/xhtml'><script>alert(1)</script></html>",
    "app.js": b"alert(1)",
    "noext": b"<html><script>alert(1)</script></html>",
}


@pytest.fixture
def artifacts(run):
    stored = {name: services.store_artifact(run, f"out/{name}", io.BytesIO(data)) for name, data in ACTIVE.items()}
    stored["notes.txt"] = services.store_artifact(run, "out/notes.txt", io.BytesIO(XSS.encode()))
    stored["curve.png"] = services.store_artifact(run, "out/curve.png", io.BytesIO(PNG))
    return stored


def assert_not_renderable(response):
    content_type = response["Content-Type"].split(";")[0].strip().lower()
    assert content_type not in {"text/html", "image/svg+xml", "application/xhtml+xml", "text/javascript", "application/javascript", "text/xml", "application/xml"}
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("name", list(ACTIVE) + ["notes.txt", "curve.png"])
def test_it_downloads_every_artifact_as_an_attachment(login, owner, run, artifacts, name):
    artifact = artifacts[name]
    response = login(owner).get(f"/runs/{run.id}/artifacts/{artifact.pk}/download")
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment")
    if name != "curve.png":
        assert_not_renderable(response)
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("name", list(ACTIVE) + ["notes.txt"])
def test_it_never_serves_active_content_inline(login, owner, run, artifacts, name):
    response = login(owner).get(f"/runs/{run.id}/artifacts/{artifacts[name].pk}/raw")
    assert response.status_code == 404


def test_it_serves_images_inline_sandboxed(login, owner, run, artifacts):
    response = login(owner).get(f"/runs/{run.id}/artifacts/{artifacts['curve.png'].pk}/raw")
    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]


@pytest.mark.parametrize("name", ["notes.txt", "report.html", "plot.svg"])
def test_it_previews_text_escaped_and_never_renders_markup(login, owner, run, artifacts, name):
    response = login(owner).get(f"/runs/{run.id}/artifacts/", {"path": artifacts[name].path})
    assert response.status_code == 200
    body = response.content.decode()
    assert XSS not in body and "<svg" not in body
    if name == "notes.txt":
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def api_get(client, owner, url):
    _, raw = ApiToken.mint(owner, "content")
    return client.get(url, HTTP_AUTHORIZATION=f"Bearer {raw}")


@pytest.mark.parametrize("name", ["report.html", "plot.svg"])
def test_it_serves_api_artifact_downloads_as_attachments(client, owner, run, artifacts, name):
    response = api_get(client, owner, f"/api/v1/runs/{run.id}/artifacts/out/{name}")
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("name", ["report.html", "plot.svg"])
def test_it_never_labels_api_artifact_downloads_as_active_content(client, owner, run, artifacts, name):
    assert_not_renderable(api_get(client, owner, f"/api/v1/runs/{run.id}/artifacts/out/{name}"))


def test_it_escapes_user_provided_names_on_pages(login, owner, workspace):
    experiment = Experiment.objects.create(workspace=workspace, name=f"exp {XSS}", created_by=owner)
    run = Run.objects.create(experiment=experiment, name=f"run {XSS}", created_by=owner)
    services.set_tags(run, {"note": XSS})
    services.log_params(run, {"lr": XSS})
    client = login(owner)
    for url in [f"/runs/{run.id}/", f"/experiments/{experiment.pk}/", f"/w/{workspace.slug}/experiments/", f"/w/{workspace.slug}/"]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert XSS not in response.content.decode(), url
