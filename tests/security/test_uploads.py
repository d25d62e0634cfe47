"""Sizes bounded before memory or disk suffer; a full disk leaves nothing half-written."""

import hashlib
import io
import os
import subprocess
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.test import RequestFactory

from tracker import storage


@pytest.fixture
def small_limits(settings, tmp_path):
    temp_dir = tmp_path / "upload-temp"
    temp_dir.mkdir()
    settings.MAX_UPLOAD_BYTES = 64 * 1024
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024  # anything bigger goes to a temp file
    settings.FILE_UPLOAD_TEMP_DIR = str(temp_dir)
    return temp_dir


def test_it_answers_413_to_a_multipart_upload_over_the_limit(db, client, small_limits):
    big = SimpleUploadedFile("weights.bin", os.urandom(200 * 1024))
    response = client.post("/login/", {"username": "x", "file": big})
    assert response.status_code == 413
    assert "larger than the limit of 64.0 KiB" in response.content.decode()
    assert list(small_limits.iterdir()) == []


def test_it_answers_413_json_on_the_api_before_reading_the_body(db, client, small_limits):
    response = client.generic(
        "PUT", f"/api/v1/runs/{uuid.uuid4()}/artifacts/model.pt", b"x" * (65 * 1024), content_type="application/octet-stream"
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_it_lets_an_upload_under_the_limit_through(db, client, small_limits):
    small = SimpleUploadedFile("notes.txt", b"hello" * 100)
    response = client.post("/login/", {"username": "x", "password": "y", "file": small})
    assert response.status_code == 200  # the login form answered: the body was accepted


def test_it_stops_a_streaming_body_past_the_limit_and_deletes_its_temp_file(db, small_limits, monkeypatch):
    """The handler itself (a lying or absent Content-Length would pass the header check)."""
    created = []
    original_new_file = TemporaryFileUploadHandler.new_file

    def spy_new_file(self, *args, **kwargs):
        original_new_file(self, *args, **kwargs)
        created.append(self.file.temporary_file_path())

    monkeypatch.setattr(TemporaryFileUploadHandler, "new_file", spy_new_file)
    request = RequestFactory().post("/upload/", {"file": SimpleUploadedFile("big.bin", os.urandom(300 * 1024))})
    assert request.FILES.get("file") is None
    assert request.upload_too_large is True
    assert created, "the upload reached a temp file before it was stopped"
    assert not any(os.path.exists(path) for path in created)
    assert list(small_limits.iterdir()) == []


def test_it_refuses_too_many_fields(db, client, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 50
    response = client.post("/login/", {f"f{i}": "x" for i in range(200)})
    assert response.status_code == 400
    response = client.post("/login/", {f"f{i}": "x" for i in range(200)}, format="multipart")
    assert response.status_code == 400


@pytest.mark.parametrize("length", ["abc", "-5"])
def test_it_refuses_a_junk_content_length(db, client, length):
    response = client.post("/login/", {"username": "x"}, CONTENT_LENGTH=length)
    assert response.status_code == 400


@pytest.fixture
def tiny_disk(tmp_path, settings):
    """Artifact storage on a 256 KiB tmpfs: a real full disk."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
    settings.STORAGES = {
        **settings.STORAGES,
        "artifacts": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(mount_point)}},
    }
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def all_files(root):
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files]


def test_it_reports_a_full_disk_and_leaves_no_partial_file(tiny_disk):
    small = storage.save_stream(io.BytesIO(b"fits" * 1000))
    assert storage.blob_exists(small.key)
    with pytest.raises(storage.StorageError, match="could not store the file"):
        storage.save_stream(io.BytesIO(os.urandom(1024 * 1024)))
    assert [os.path.basename(p) for p in all_files(tiny_disk)] == [small.key.rsplit("/", 1)[-1]]
    assert not any(p.endswith(".part") for p in all_files(tiny_disk))


def test_it_keeps_nothing_when_the_sha256_does_not_match(tiny_disk):
    data = b"model weights"
    with pytest.raises(storage.StorageError, match="sha256"):
        storage.save_stream(io.BytesIO(data), expected_sha256=hashlib.sha256(b"other").hexdigest())
    assert all_files(tiny_disk) == []
    blob = storage.save_stream(io.BytesIO(data), expected_sha256=hashlib.sha256(data).hexdigest())
    with storage.open_blob(blob.key) as stored:
        assert stored.read() == data


def test_it_keeps_nothing_past_max_bytes(tiny_disk):
    with pytest.raises(storage.TooLarge):
        storage.save_stream(io.BytesIO(b"x" * 5000), max_bytes=4096)
    assert all_files(tiny_disk) == []
