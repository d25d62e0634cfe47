"""Blob storage for artifacts and registry files, addressed by server-generated keys.

Paths never come from users: a logical path (what the user sees) lives in
the database, the bytes live under a random key. On local disk a file is
written to a temp name, fsynced, checked and renamed, so a crash or a full
disk never leaves a half-written file that looks complete. A containment
check after resolving real paths is the second line of defence.
"""

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, storages

CHUNK = 1024 * 1024


class StorageError(Exception):
    """Storing bytes failed (disk full, limit exceeded); nothing was kept."""


class TooLarge(StorageError):
    pass


@dataclass(frozen=True)
class StoredBlob:
    key: str
    size: int
    sha256: str


def artifact_storage():
    return storages["artifacts"]


def new_key(kind="artifacts"):
    token = uuid.uuid4().hex
    return f"{kind}/{token[:2]}/{token}"


def _is_local(storage):
    return isinstance(storage, FileSystemStorage)


def local_path(key):
    """The on-disk path of `key` for local storage (containment checked), else None."""
    storage = artifact_storage()
    if not _is_local(storage):
        return None
    if "\x00" in key:
        raise StorageError("storage key contains a NUL byte")
    root = Path(storage.location).resolve()
    path = (root / key).resolve()
    if not path.is_relative_to(root) or path == root:
        raise StorageError("storage key escapes the storage root")
    return path


def save_stream(stream, kind="artifacts", max_bytes=None, expected_sha256=None):
    """Copy a readable binary stream into storage under a new key; returns a StoredBlob."""
    storage = artifact_storage()
    key = new_key(kind)
    digest = hashlib.sha256()
    size = 0
    if _is_local(storage):
        final = local_path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(final.name + ".part")
        try:
            with open(temp, "wb") as out:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise TooLarge(f"file is larger than the limit of {max_bytes} bytes")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if expected_sha256 and digest.hexdigest() != expected_sha256:
                raise StorageError("sha256 of the stored bytes does not match")
            os.replace(temp, final)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StorageError(f"could not store the file: {exc.strerror or exc}") from exc
        except StorageError:
            temp.unlink(missing_ok=True)
            raise
        return StoredBlob(key=key, size=size, sha256=digest.hexdigest())

    # Remote storage (S3): hash while streaming through a wrapper, then verify.
    class _Hashing:
        def __init__(self, inner):
            self.inner = inner

        def read(self, n=-1):
            nonlocal size
            chunk = self.inner.read(n)
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise TooLarge(f"file is larger than the limit of {max_bytes} bytes")
            digest.update(chunk)
            return chunk

    try:
        storage.save(key, File(_Hashing(stream), name=key))
    except TooLarge:
        storage.delete(key)
        raise
    if expected_sha256 and digest.hexdigest() != expected_sha256:
        storage.delete(key)
        raise StorageError("sha256 of the stored bytes does not match")
    return StoredBlob(key=key, size=size, sha256=digest.hexdigest())


def save_file(path, kind="artifacts", max_bytes=None):
    with open(path, "rb") as stream:
        return save_stream(stream, kind=kind, max_bytes=max_bytes)


def open_blob(key):
    """Open stored bytes for reading (binary)."""
    path = local_path(key)
    if path is not None:
        return open(path, "rb")
    return artifact_storage().open(key, "rb")


def delete_blob(key):
    path = local_path(key)
    if path is not None:
        path.unlink(missing_ok=True)
    else:
        artifact_storage().delete(key)


def blob_exists(key):
    path = local_path(key)
    return path.exists() if path is not None else artifact_storage().exists(key)


def artifact_root():
    return Path(settings.ARTIFACT_ROOT)
