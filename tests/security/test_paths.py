"""Paths never come from users: a fuzz corpus of traversal spellings against every path parameter.

Each hostile path is either refused (404 / 400 / a validation error) or taken
as a plain logical name that only ever looks up database rows; the bytes live
under server-generated keys. A canary file next to the storage root is never
read, returned, changed or deleted, and nothing is written outside the root.
"""

import io
import os
import tarfile
import uuid
import zipfile

import pytest
from django.urls import Resolver404, resolve

from tracker import storage
from tracker.models import ApiToken, Artifact

CANARY_TEXT = "CANARY-" + uuid.uuid4().hex

# Traversal spellings that broke MLflow's artifact handlers (and friends), aimed at ../canary.txt.
CORPUS = [
    "../canary.txt",
    "../../canary.txt",
    "..\\canary.txt",
    "\\..\\canary.txt",
    "..%2fcanary.txt",
    "%2e%2e%2fcanary.txt",
    "%2e%2e/canary.txt",
    "%252e%252e%252fcanary.txt",
    "..%252fcanary.txt",
    "....//canary.txt",
    "..;/canary.txt",
    "model.pt/../../canary.txt",
    "a/./../../canary.txt",
    "/etc/passwd",
    "//etc/passwd",
    "/proc/self/environ",
    "//proc/self/environ",
    "file:///etc/passwd",
    "file://../canary.txt",
    "s3://bucket/../canary.txt",
    "C:\\Windows\\win.ini",
    "C:/canary.txt",
    "model.pt;../../canary.txt",
    "model.pt#../../canary.txt",
    "model.pt?../../canary.txt",
    "..#/canary.txt",
    "..?/canary.txt",
    "model.pt\x00../../canary.txt",
    "..\x00/canary.txt",
    "\u2025/canary.txt",  # two-dot leader
    "\uff0e\uff0e/canary.txt",  # fullwidth full stops
    "..\u2215canary.txt",  # division slash
    "..\uff0fcanary.txt",  # fullwidth solidus
    "~/canary.txt",
    ".",
    "..",
    "",
]


@pytest.fixture
def sandbox(tmp_path, settings):
    """Artifact storage in sandbox/root, with a canary file beside it (what ../canary.txt would reach)."""
    root = tmp_path / "sandbox" / "root"
    root.mkdir(parents=True)
    canary = tmp_path / "sandbox" / "canary.txt"
    canary.write_text(CANARY_TEXT)
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(root)}},
    }
    settings.ARTIFACT_ROOT = root
    before = snapshot_outside(tmp_path / "sandbox", root)
    yield root
    assert canary.read_text() == CANARY_TEXT, "the canary outside the storage root was changed"
    assert snapshot_outside(tmp_path / "sandbox", root) == before, "something was written outside the storage root"


def snapshot_outside(base, root):
    found = {}
    for folder, dirs, files in os.walk(base):
        if os.path.realpath(folder).startswith(os.path.realpath(root)):
            dirs[:] = []
            continue
        for name in files:
            path = os.path.join(folder, name)
            found[path] = os.path.getsize(path)
    return found


def assert_no_canary(response):
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert CANARY_TEXT.encode() not in body
    assert b"root:x:0:0" not in body  # /etc/passwd


# --- the storage layer: keys are ours; a containment check after resolving real paths ------------


@pytest.mark.parametrize("key", CORPUS + ["artifacts/../../canary.txt", "artifacts/ab/../../../canary.txt"])
def test_it_never_resolves_a_key_outside_the_root(sandbox, key):
    try:
        path = storage.local_path(key)
    except (storage.StorageError, ValueError):  # ValueError: a NUL byte, refused by the OS layer
        return
    assert path.is_relative_to(sandbox.resolve()) and path != sandbox.resolve()
    try:
        with storage.open_blob(key) as blob:
            assert CANARY_TEXT.encode() not in blob.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError):
        pass
    storage.delete_blob(key)  # the canary check in the fixture proves this deleted nothing outside


def test_it_refuses_a_symlink_that_leads_out_of_the_root(sandbox):
    (sandbox / "artifacts" / "ab").mkdir(parents=True)
    (sandbox / "artifacts" / "ab" / "evil").symlink_to(sandbox.parent / "canary.txt")
    with pytest.raises(storage.StorageError, match="escapes"):
        storage.open_blob("artifacts/ab/evil")
    with pytest.raises(storage.StorageError):
        storage.delete_blob("artifacts/ab/evil")


def test_it_stores_blobs_under_server_generated_keys(sandbox):
    blob = storage.save_stream(io.BytesIO(b"weights"))
    assert blob.key.startswith("artifacts/") and ".." not in blob.key
    assert storage.local_path(blob.key).is_relative_to(sandbox)


# --- tracking services: logical paths are names, never filesystem paths -----------------------------


@pytest.mark.parametrize("hostile", CORPUS)
def test_it_keeps_store_artifact_inside_the_root(sandbox, run, hostile):
    from tracker import services

    try:
        artifact = services.store_artifact(run, hostile, io.BytesIO(b"payload"))
    except (services.InvalidArtifactPath, ValueError):
        assert not Artifact.objects.filter(run=run).exists()
        return
    assert ".." not in artifact.path.split("/") and not artifact.path.startswith("/") and "\\" not in artifact.path
    assert storage.local_path(artifact.storage_key).is_relative_to(sandbox)
    with storage.open_blob(artifact.storage_key) as blob:
        assert blob.read() == b"payload"


@pytest.mark.parametrize("hostile", CORPUS)
def test_it_keeps_register_from_run_to_the_runs_own_artifacts(sandbox, run, owner, hostile):
    from registry import services as registry_services

    with pytest.raises(registry_services.RegistrationError):
        registry_services.register_from_run(run=run, path=hostile, name="m", user=owner)


# --- job source archives: every member checked while unpacking ----------------------------------------


def zip_with(name):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.py", "print('hi')\n")
        archive.writestr(name, CANARY_TEXT.replace("CANARY", "OVERWRITTEN"))
    buffer.seek(0)
    return buffer


def tar_with(name):
    buffer = io.BytesIO()
    data = b"OVERWRITTEN"
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("hostile", [p for p in CORPUS if p and "\x00" not in p])
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_it_never_unpacks_a_source_member_outside_the_work_dir(sandbox, hostile, kind):
    from django.core.exceptions import ValidationError

    from jobs.source_archive import extract_source

    dest = sandbox / "work"
    archive, filename = (zip_with(hostile), "src.zip") if kind == "zip" else (tar_with(hostile), "src.tar.gz")
    try:
        written = extract_source(archive, filename, dest)
    except ValidationError:
        return
    for name in written:
        assert (dest / name).resolve().is_relative_to(dest.resolve())


def test_it_refuses_archive_links(sandbox):
    from django.core.exceptions import ValidationError

    from jobs.source_archive import extract_source

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        link = tarfile.TarInfo("data")
        link.type = tarfile.SYMTYPE
        link.linkname = "../canary.txt"
        archive.addfile(link)
    buffer.seek(0)
    with pytest.raises(ValidationError):
        extract_source(buffer, "src.tar.gz", sandbox / "work")


# --- routes: every path-like parameter answers 404 (or 400 for uploads) --------------------------------


@pytest.fixture
def stored_artifact(sandbox, run):
    from tracker import services

    return services.store_artifact(run, "outputs/model.pt", io.BytesIO(b"real weights"))


@pytest.mark.parametrize("hostile", CORPUS)
def test_it_answers_404_to_hostile_artifact_browser_paths(login, owner, run, stored_artifact, hostile):
    client = login(owner)
    response = client.get(f"/runs/{run.id}/artifacts/", {"path": hostile})
    assert response.status_code == 404
    assert_no_canary(response)
    raw = client.get(f"/runs/{run.id}/artifacts/?path={hostile}")
    assert raw.status_code in (200, 404)  # '#' or '?' cut the value short: the listing, never a file
    assert_no_canary(raw)


@pytest.mark.parametrize("hostile", [p for p in CORPUS if p])
def test_it_answers_404_to_hostile_artifact_download_paths(login, owner, run, stored_artifact, hostile):
    client = login(owner)
    for suffix in ("download", "raw"):
        response = client.get(f"/runs/{run.id}/artifacts/{hostile}/{suffix}")
        assert response.status_code == 404, (hostile, suffix)
        assert_no_canary(response)


def route_exists(path):
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


@pytest.fixture
def api_client(client, owner, run):
    _, raw = ApiToken.mint(owner, "fuzz")
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {raw}"
    return client


@pytest.mark.parametrize("hostile", [p for p in CORPUS if p])
def test_it_answers_404_or_400_on_the_api_artifact_routes(api_client, run, stored_artifact, hostile, sandbox):
    base = f"/api/v1/runs/{run.id}/artifacts/"
    if not route_exists(base + "outputs/model.pt"):
        pytest.skip("PUT/GET /api/v1/runs/<id>/artifacts/<path> is not routed yet")
    assert api_client.get(base + "outputs/model.pt").status_code == 200  # the real file answers
    response = api_client.get(base + hostile)
    assert response.status_code in (400, 404), response.status_code
    assert_no_canary(response)
    before = set(Artifact.objects.filter(run=run).values_list("path", flat=True))
    response = api_client.generic("PUT", base + hostile, b"payload", content_type="application/octet-stream")
    if response.status_code in (200, 201):
        # Taken as a plain logical name (e.g. '%2e%2e%2f' literally): stored under our key, inside the root.
        artifact = Artifact.objects.get(run=run, path=response.json().get("path"))
        assert ".." not in artifact.path.split("/")
        assert storage.local_path(artifact.storage_key).is_relative_to(sandbox)
    else:
        assert response.status_code in (400, 404), response.status_code
        assert set(Artifact.objects.filter(run=run).values_list("path", flat=True)) == before


MLFLOW_ARTIFACT_BASES = [
    "/api/2.0/mlflow-artifacts/artifacts/",
    "/ajax-api/2.0/mlflow-artifacts/artifacts/",
    "/mlflow/api/2.0/mlflow-artifacts/artifacts/",
]


@pytest.mark.parametrize("hostile", [p for p in CORPUS if p])
def test_it_answers_404_or_400_on_the_mlflow_artifact_proxy(api_client, run, stored_artifact, hostile):
    prefix = f"{run.experiment_id}/{run.id}/artifacts/"
    bases = [b for b in MLFLOW_ARTIFACT_BASES if route_exists(f"{b}{prefix}outputs/model.pt")]
    if not bases:
        pytest.skip("the MLflow artifact proxy is not routed yet")
    for base in bases:
        control = api_client.get(f"{base}{prefix}outputs/model.pt")  # the real file answers: the URL shape is right
        assert control.status_code == 200, (base, control.status_code)
        assert b"".join(control.streaming_content) == b"real weights"
        response = api_client.get(f"{base}{prefix}{hostile}")
        assert response.status_code in (400, 404), (base, hostile, response.status_code)
        assert_no_canary(response)
        response = api_client.get(f"{base}{hostile}")
        assert response.status_code in (400, 404), (base, hostile, response.status_code)
        assert_no_canary(response)


@pytest.mark.parametrize("hostile", [p for p in CORPUS if p and "\x00" not in p])
def test_it_keeps_job_source_uploads_under_server_keys(api_client, workspace, sandbox, hostile):
    """POST /api/v1/sources?filename=<hostile>: refused, or stored under our key with a plain base name."""
    from urllib.parse import quote

    url = f"/api/v1/sources?workspace={workspace.slug}&filename={quote(hostile + '.py', safe='')}"
    response = api_client.generic("POST", url, b"print('hi')\n", content_type="application/octet-stream")
    if response.status_code == 201:
        filename = response.json()["filename"]
        assert "/" not in filename and "\\" not in filename and ".." not in filename.split("/")
    else:
        assert response.status_code == 400, response.status_code
    control = api_client.generic(
        "POST", f"/api/v1/sources?workspace={workspace.slug}&filename=train.py", b"print('hi')\n",
        content_type="application/octet-stream",
    )
    assert control.status_code == 201  # a plain name is taken: the refusals above are about the path
