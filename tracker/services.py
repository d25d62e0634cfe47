"""Tracking actions that span models or reach outside the database (artifact files).

Used by the REST API, the jobs engine, the registry and the MLflow-compatible
API. Bad input never loses what is already stored: params are immutable (the
same value again is fine), a bad item is reported and the good ones are kept.
"""

import mimetypes

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tracker import storage
from tracker.models import Artifact, Param, Run, RunStatus, RunTag

MAX_KEY_LENGTH = 250
MAX_PARAM_BYTES = 8 * 1024
MAX_TAG_BYTES = 64 * 1024
MAX_RUN_NAME = 250
MAX_ARTIFACT_PATH = 1024


class InvalidInput(ValueError):
    """Input the caller must fix; `errors` lists each problem as {"key", "code", "message"}."""

    def __init__(self, message, errors=None, code="invalid"):
        super().__init__(message)
        self.errors = errors or []
        self.code = code


class InvalidArtifactPath(InvalidInput):
    def __init__(self, message):
        super().__init__(message, code="invalid_path")


def _key_error(key):
    if not isinstance(key, str) or not key.strip():
        return "missing_key", "the key is empty"
    if len(key) > MAX_KEY_LENGTH:
        return "key_too_long", f"keys are at most {MAX_KEY_LENGTH} characters (got {len(key)})"
    if any(ord(c) < 32 for c in key):
        return "invalid_key", "keys may not contain control characters"
    return None


def _as_text(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@transaction.atomic
def create_run(
    *, experiment, user, name="", params=None, tags=None, status=RunStatus.RUNNING, parent_run=None, source_note="",
    run_id=None,
):
    """Create a run in `experiment` with its params and tags; InvalidInput (nothing created) on bad input.

    run_id: a client-chosen UUID (offline clients create runs with their own id).
    """
    name = (name or "").strip()
    if len(name) > MAX_RUN_NAME:
        raise InvalidInput(f"run names are at most {MAX_RUN_NAME} characters", code="name_too_long")
    if status not in RunStatus.values:
        raise InvalidInput(f"unknown status {status!r}", code="invalid_status")
    now = timezone.now()
    fields = {}
    if status == RunStatus.RUNNING:
        fields = {"start_time": now, "running_at": now}
    elif status == RunStatus.QUEUED:
        fields = {"queued_at": now}
    if run_id is not None:
        fields["id"] = run_id
    run = Run.objects.create(
        experiment=experiment,
        name=name,
        status=status,
        created_by=user if user is not None and user.is_authenticated else None,
        parent_run=parent_run,
        source_note=source_note or "",
        **fields,
    )
    errors = log_params(run, params or {}) + set_tags(run, tags or {})
    if errors:
        raise InvalidInput("; ".join(f"{e['key']}: {e['message']}" for e in errors), errors=errors)
    return run


def log_params(run, params):
    """Store params (values as text); returns a list of {"key", "code", "message"} for the ones refused.

    Params are immutable: the same value again is fine, a different value is
    `param_conflict`; a value over 8 KB is `param_too_long`.
    """
    if not params:
        return []
    errors = []
    wanted = {}
    for key, value in params.items():
        problem = _key_error(key)
        text = _as_text(value)
        if problem is None and len(text.encode()) > MAX_PARAM_BYTES:
            problem = ("param_too_long", f"param values are at most {MAX_PARAM_BYTES} bytes (got {len(text.encode())})")
        if problem:
            errors.append({"key": str(key)[:300], "code": problem[0], "message": problem[1]})
        else:
            wanted[key] = text
    with transaction.atomic():
        existing = dict(Param.objects.filter(run=run, key__in=list(wanted)).values_list("key", "value"))
        new = []
        for key, text in wanted.items():
            if key in existing:
                if existing[key] != text:
                    errors.append(
                        {
                            "key": key,
                            "code": "param_conflict",
                            "message": f"param {key!r} is already {existing[key]!r}; params cannot change",
                        }
                    )
            else:
                new.append(Param(run=run, key=key, value=text))
        Param.objects.bulk_create(new)
    return errors


def set_tags(run, tags):
    """Set (or overwrite) tags; returns a list of {"key", "code", "message"} for the ones refused."""
    if not tags:
        return []
    errors = []
    wanted = {}
    for key, value in tags.items():
        problem = _key_error(key)
        text = _as_text(value)
        if problem is None and len(text.encode()) > MAX_TAG_BYTES:
            problem = ("tag_too_long", f"tag values are at most {MAX_TAG_BYTES} bytes")
        if problem:
            errors.append({"key": str(key)[:300], "code": problem[0], "message": problem[1]})
        else:
            wanted[key] = text
    with transaction.atomic():
        for key, text in wanted.items():
            RunTag.objects.update_or_create(run=run, key=key, defaults={"value": text})
    return errors


def delete_tag(run, key):
    return RunTag.objects.filter(run=run, key=key).delete()[0] > 0


def clean_artifact_path(path):
    """The logical artifact path, checked: relative, no `..`, no backslashes, no NUL; InvalidArtifactPath otherwise."""
    if not isinstance(path, str) or not path.strip():
        raise InvalidArtifactPath("the artifact path is empty")
    if "\x00" in path or any(ord(c) < 32 for c in path):
        raise InvalidArtifactPath("the artifact path contains control characters")
    if "\\" in path:
        raise InvalidArtifactPath("the artifact path may not contain backslashes")
    if path.startswith("/"):
        raise InvalidArtifactPath("the artifact path must be relative")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts:
        raise InvalidArtifactPath("the artifact path is empty")
    if any(part == ".." for part in parts):
        raise InvalidArtifactPath("the artifact path may not contain '..'")
    clean = "/".join(parts)
    if len(clean) > MAX_ARTIFACT_PATH:
        raise InvalidArtifactPath(f"artifact paths are at most {MAX_ARTIFACT_PATH} characters")
    return clean


def store_artifact(run, path, stream, max_bytes=None, content_type=""):
    """Stream `stream` into storage as the artifact at logical `path` of `run`; replaces one already there.

    Raises InvalidArtifactPath before reading anything, storage.TooLarge /
    storage.StorageError when the bytes could not be kept (nothing changes then).
    """
    path = clean_artifact_path(path)
    limit = settings.MAX_UPLOAD_BYTES if max_bytes is None else max_bytes
    blob = storage.save_stream(stream, kind="artifacts", max_bytes=limit)
    content_type = content_type or mimetypes.guess_type(path)[0] or "application/octet-stream"
    try:
        with transaction.atomic():
            old = Artifact.objects.select_for_update().filter(run=run, path=path).first()
            if old is not None:
                old_key = old.storage_key
                old.size, old.sha256, old.storage_key = blob.size, blob.sha256, blob.key
                old.content_type, old.created_at = content_type, timezone.now()
                old.save()
                transaction.on_commit(lambda: storage.delete_blob(old_key))
                return old
            return Artifact.objects.create(
                run=run, path=path, size=blob.size, sha256=blob.sha256, storage_key=blob.key, content_type=content_type
            )
    except Exception:
        storage.delete_blob(blob.key)
        raise


def update_run(run, *, name=None, status=None, reason=""):
    """Rename and/or move a run to `status` (terminal states are final); InvalidInput on bad values."""
    if name is not None:
        name = name.strip()
        if len(name) > MAX_RUN_NAME:
            raise InvalidInput(f"run names are at most {MAX_RUN_NAME} characters", code="name_too_long")
        run.name = name
        run.save(update_fields=["name"])
    if status is not None and status != run.status:
        if status not in RunStatus.values:
            raise InvalidInput(f"unknown status {status!r}", code="invalid_status")
        if run.is_terminal:
            raise InvalidInput(f"the run has ended ({run.status}); its status cannot change", code="run_ended")
        run.move_to(status, reason)
    return run
