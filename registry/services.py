"""Registry actions that span models, storage, subprocesses and the queue.

    register_version(...)        files → validated, copied, immutable ModelVersion
    register_from_run(...)       a run's artifact file or folder prefix → version
    register_from_upload(...)    an uploaded weights file → version
    set_alias / delete_alias     aliases, with history
    delete_version / delete_model  rows and their stored files
    request_onnx_export(...)     OnnxExport + RQ job on the cluster's queue
    request_inference(...)       "try it" request + RQ job

Errors a user can fix raise RegistrationError(code, message, details).
"""

import importlib.metadata
import logging
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from django.core.exceptions import ValidationError
from django.db import transaction

from registry import conf
from registry.loading import FLAVOUR_SUFFIXES, looks_like_torch_file, primary_file
from registry.models import (
    AliasEvent,
    Flavour,
    Framework,
    InferenceRequest,
    InputDtype,
    ModelAlias,
    ModelFile,
    ModelVersion,
    OnnxExport,
    RegisteredModel,
    TaskStatus,
    validate_alias_name,
    validate_model_name,
)
from registry.workdir import SubprocessFailed, place_blob, place_run_source, run_loader
from tracker import storage

logger = logging.getLogger("torchlight.registry")

TORCH_VERSION_KEYS = ("torch_version", "torch.version", "pytorch_version", "framework_version")


class RegistrationError(Exception):
    """Registering, aliasing or exporting was refused; nothing was stored."""

    def __init__(self, code, message, details=None, status=400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.status = status


class ArtifactNotFound(RegistrationError):
    def __init__(self, path):
        super().__init__("not_found", f"the run has no artifact at {path!r}", status=404)


@dataclass
class FileSource:
    """One file to register: its logical path in the version and how to open its bytes."""

    path: str
    open: Callable
    size: int | None = None


@dataclass
class _Stored:
    path: str
    blob: storage.StoredBlob


@dataclass
class VersionOptions:
    flavour: str = Flavour.STATE_DICT
    architecture: str = ""
    arch_kwargs: dict = field(default_factory=dict)
    input_shape: list | None = None
    input_dtype: str = InputDtype.FLOAT32


# ---------------------------------------------------------------- models

def get_or_create_model(*, workspace, name, user=None, description=""):
    try:
        validate_model_name(name)
    except ValidationError as exc:
        raise RegistrationError("invalid_name", exc.messages[0]) from None
    model, _ = RegisteredModel.objects.get_or_create(
        workspace=workspace, name=name, defaults={"created_by": user, "description": description}
    )
    return model


def create_registered_model(*, workspace, name, user=None, description="", tags=None):
    """A new, empty registered model; RegistrationError('already_exists', status=409) if the name is taken."""
    try:
        validate_model_name(name)
    except ValidationError as exc:
        raise RegistrationError("invalid_name", exc.messages[0]) from None
    if RegisteredModel.objects.filter(workspace=workspace, name=name).exists():
        raise RegistrationError("already_exists", f"a model named {name!r} already exists", status=409)
    return RegisteredModel.objects.create(
        workspace=workspace, name=name, created_by=user, description=description, tags=tags or {}
    )


# ---------------------------------------------------------------- validation

def parse_input_shape(value):
    """'1,3,224,224' or [1,3,224,224] → list of ints (first dim = batch); None for empty."""
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        text = value.strip().strip("()[] ")
        if re.fullmatch(r"\d+(\s*[x×]\s*\d+)+", text):  # 1x3x224x224
            text = re.sub(r"[x×]", ",", text)
        parts = [p.strip() for p in text.split(",")]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise RegistrationError("invalid_input_shape", "the input shape is a list of positive integers like 1,3,224,224")
    try:
        dims = [int(p) if not (isinstance(p, str) and p.lower() in ("batch", "n", "-1", "?")) else 1 for p in parts]
    except (TypeError, ValueError):
        raise RegistrationError("invalid_input_shape", f"the input shape {value!r} is not a list of integers like 1,3,224,224") from None
    if not 1 <= len(dims) <= 8 or any(d < 1 or d > 1_000_000 for d in dims):
        raise RegistrationError("invalid_input_shape", "the input shape has 1 to 8 positive dimensions; the first is the batch")
    return dims


def parse_arch_kwargs(items):
    """['num_classes=2', 'dropout=0.1'] or a dict → dict with ints/floats/bools/None parsed."""
    if isinstance(items, dict):
        return dict(items)
    result = {}
    for item in items or []:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise RegistrationError("invalid_arch_arg", f"architecture argument {item!r} is not KEY=VALUE")
        result[key] = _parse_scalar(raw.strip())
    return result


def _parse_scalar(raw):
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw.strip("'\"")


def _check_options(opts, trusted):
    if opts.flavour not in Flavour.values:
        raise RegistrationError("invalid_flavour", f"unknown flavour {opts.flavour!r}; one of {', '.join(Flavour.values)}")
    if opts.input_dtype not in InputDtype.values:
        raise RegistrationError("invalid_dtype", f"unknown input dtype {opts.input_dtype!r}")
    if opts.architecture:
        kind, sep, name = opts.architecture.partition(":")
        if not sep or not kind or not name or not all(p.isidentifier() for p in kind.split(".") + [name]):
            raise RegistrationError(
                "invalid_architecture", f"architecture {opts.architecture!r} is not 'torchvision:<name>' or 'module:Class'"
            )
    if opts.flavour == Flavour.FULL_PICKLE and not trusted:
        raise RegistrationError(
            "untrusted_pickle",
            "a full pickle runs code when it is loaded: it is registered only with “I trust this file: loading it runs code”",
        )


def _quick_check(stored, opts):
    """Checks the web process may do on bytes alone (never unpickling): empty or not a torch file."""
    paths = [s.path for s in stored]
    try:
        main_path = primary_file(paths, opts.flavour)
    except Exception as exc:
        raise RegistrationError("no_model_file", getattr(exc, "message", str(exc))) from None
    main = next(s for s in stored if s.path == main_path)
    name = PurePosixPath(main.path).name
    if opts.flavour in (Flavour.STATE_DICT, Flavour.TORCHSCRIPT, Flavour.TORCH_EXPORT, Flavour.FULL_PICKLE):
        if main.blob.size == 0:
            raise RegistrationError("not_pytorch_file", f"{name} is not a PyTorch file (it is empty)")
        with storage.open_blob(main.blob.key) as fh:
            head = fh.read(8)
        if not looks_like_torch_file(head):
            raise RegistrationError("not_pytorch_file", f"{name} is not a PyTorch file (unrecognised content)")
    if opts.flavour in (Flavour.ONNX, Flavour.SAFETENSORS) and main.blob.size == 0:
        raise RegistrationError(f"not_{opts.flavour}_file", f"{name} is not a {opts.flavour} file (it is empty)")


def _validate_in_subprocess(stored, opts, trusted, run):
    """Load the model in a subprocess (never here); returns its info dict or raises RegistrationError."""
    with tempfile.TemporaryDirectory(prefix="tl-validate-") as tmp:
        files_dir = Path(tmp) / "files"
        files_dir.mkdir()
        for s in stored:
            place_blob(files_dir, s.path, s.blob.key)
        source_dir = None
        if opts.architecture and not opts.architecture.startswith("torchvision:") or opts.flavour == Flavour.FULL_PICKLE:
            source_dir = place_run_source(run, Path(tmp) / "source")
        spec = {
            "flavour": opts.flavour,
            "architecture": opts.architecture,
            "arch_kwargs": opts.arch_kwargs,
            "input_shape": opts.input_shape,
            "input_dtype": opts.input_dtype,
            "trusted": trusted,
            "files": [s.path for s in stored],
            "files_dir": str(files_dir),
            "source_dir": str(source_dir) if source_dir else None,
        }
        try:
            result = run_loader("registry.loading", "inspect", spec, tmp, conf.VALIDATE_TIMEOUT)
        except SubprocessFailed as exc:
            raise RegistrationError("load_failed", f"the model could not be loaded: {exc}") from None
    if not result["ok"]:
        raise RegistrationError(result["code"], result["message"], result.get("details") or None)
    return result["info"]


# ---------------------------------------------------------------- register

def _default_framework_version(run, framework):
    if framework == Framework.ONNX:
        return importlib.metadata.version("onnx")
    if run is not None:
        for rel in (run.params, run.tags):
            row = rel.filter(key__in=TORCH_VERSION_KEYS).order_by("key").first()
            if row and row.value:
                return row.value[:50]
    return importlib.metadata.version("torch").split("+")[0]


def register_version(
    *,
    workspace,
    name,
    user,
    files,
    flavour=Flavour.STATE_DICT,
    architecture="",
    arch_kwargs=None,
    input_shape=None,
    input_dtype=InputDtype.FLOAT32,
    description="",
    tags=None,
    run=None,
    trusted=False,
    framework=None,
    framework_version="",
    source_version=None,
    parity=None,
    output_shape=None,
    validate=True,
):
    """Copy `files` (FileSource list) into registry storage and create the next immutable version of model `name`.

    The model is created if it does not exist. With validate=True the model is
    loaded in a subprocess first (never in this process); a file that does not
    load raises RegistrationError and nothing is kept. Returns the ModelVersion.
    """
    if run is not None and run.experiment.workspace_id != workspace.pk:
        raise RegistrationError("not_found", "run not found", status=404)
    if not files:
        raise RegistrationError("no_files", "there are no files to register")
    opts = VersionOptions(
        flavour=flavour,
        architecture=(architecture or "").strip(),
        arch_kwargs=parse_arch_kwargs(arch_kwargs),
        input_shape=parse_input_shape(input_shape),
        input_dtype=input_dtype or InputDtype.FLOAT32,
    )
    _check_options(opts, trusted)
    try:
        validate_model_name(name)
    except ValidationError as exc:
        raise RegistrationError("invalid_name", exc.messages[0]) from None
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        raise RegistrationError("duplicate_path", "two files have the same path")

    stored = []
    try:
        for f in files:
            with f.open() as stream:
                stored.append(_Stored(f.path, storage.save_stream(stream, kind="registry")))
        info = {}
        if validate:
            _quick_check(stored, opts)
            info = _validate_in_subprocess(stored, opts, trusted, run)
        with transaction.atomic():
            model = get_or_create_model(workspace=workspace, name=name, user=user)
            model = RegisteredModel.objects.select_for_update().get(pk=model.pk)
            version = ModelVersion.objects.create(
                model=model,
                version=model.next_version_number(),
                flavour=opts.flavour,
                framework=framework or (Framework.ONNX if opts.flavour == Flavour.ONNX else Framework.PYTORCH),
                framework_version=framework_version or _default_framework_version(run, framework),
                architecture=opts.architecture,
                arch_kwargs=opts.arch_kwargs,
                input_shape=opts.input_shape,
                input_dtype=opts.input_dtype,
                output_shape=output_shape or info.get("output_shape"),
                description=description,
                tags=tags or {},
                trusted=bool(trusted),
                run=run,
                source_version=source_version,
                parity=parity,
                total_size=sum(s.blob.size for s in stored),
                created_by=user,
            )
            ModelFile.objects.bulk_create(
                ModelFile(version=version, path=s.path, size=s.blob.size, sha256=s.blob.sha256, storage_key=s.blob.key)
                for s in stored
            )
            model.save(update_fields=["updated_at"])
    except BaseException:
        for s in stored:
            storage.delete_blob(s.blob.key)
        raise
    logger.info("registered %s v%s (%s)", name, version.version, opts.flavour)
    return version


def _clean_logical_path(path):
    """A run artifact path as typed by a user; only used to look up rows, never the filesystem."""
    path = (path or "").strip()
    if not path or "\x00" in path or "\\" in path or path.startswith("/") or ":" in path.split("/")[0]:
        return None
    parts = path.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return "/".join(parts)


def run_files(run, path):
    """FileSources for a run's artifact at `path`: the file itself, or every artifact under that folder prefix."""
    logical = _clean_logical_path(path)
    if logical is None:
        raise ArtifactNotFound(path)
    exact = run.artifacts.filter(path=logical).first()
    if exact is not None:
        artifacts, base = [exact], logical.rsplit("/", 1)[0] + "/" if "/" in logical else ""
    else:
        artifacts = list(run.artifacts.filter(path__startswith=logical + "/"))
        base = logical + "/"
        if not artifacts:
            raise ArtifactNotFound(path)
    return [
        FileSource(path=a.path[len(base):], open=(lambda key=a.storage_key: storage.open_blob(key)), size=a.size)
        for a in artifacts
    ]


def register_from_run(*, run, path, name, user, **options):
    """Register the run's artifact file or folder (`outputs/model.pt`, `outputs/`) as a new version."""
    return register_version(workspace=run.experiment.workspace, name=name, user=user, files=run_files(run, path), run=run, **options)


def register_from_upload(*, workspace, name, user, uploaded_file, **options):
    """Register an uploaded file (a Django UploadedFile or any object with .name and .open/.read)."""
    filename = PurePosixPath((uploaded_file.name or "model.pt").replace("\\", "/")).name or "model.pt"
    if filename in (".", ".."):
        filename = "model.pt"

    def _open():
        uploaded_file.seek(0)
        return _NoClose(uploaded_file)

    return register_version(
        workspace=workspace, name=name, user=user, files=[FileSource(path=filename, open=_open)], **options
    )


class _NoClose:
    def __init__(self, inner):
        self.inner = inner

    def read(self, n=-1):
        return self.inner.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def suggested_flavour(path):
    lowered = path.lower()
    for flavour, suffixes in (("onnx", (".onnx",)), ("safetensors", (".safetensors",)), ("torch_export", (".pt2",))):
        if lowered.endswith(suffixes):
            return flavour
    return Flavour.STATE_DICT


# ---------------------------------------------------------------- aliases

@transaction.atomic
def set_alias(*, model, alias, version, user=None):
    """Point `alias` at `version` (a ModelVersion of this model); moving it is recorded."""
    try:
        validate_alias_name(alias)
    except ValidationError as exc:
        raise RegistrationError("invalid_alias", exc.messages[0]) from None
    if version.model_id != model.pk:
        raise RegistrationError("not_found", "version not found", status=404)
    existing = ModelAlias.objects.select_for_update().select_related("version").filter(model=model, name=alias).first()
    if existing is not None:
        if existing.version_id == version.pk:
            return existing
        previous = existing.version.version
        existing.version = version
        existing.updated_by = user
        existing.save(update_fields=["version", "updated_by", "updated_at"])
        AliasEvent.objects.create(model=model, alias=alias, from_version=previous, to_version=version.version, user=user)
        return existing
    created = ModelAlias.objects.create(model=model, name=alias, version=version, updated_by=user)
    AliasEvent.objects.create(model=model, alias=alias, from_version=None, to_version=version.version, user=user)
    return created


@transaction.atomic
def delete_alias(*, model, alias, user=None):
    existing = ModelAlias.objects.select_related("version").filter(model=model, name=alias).first()
    if existing is None:
        raise RegistrationError("not_found", f"alias {alias!r} not found", status=404)
    AliasEvent.objects.create(model=model, alias=alias, from_version=existing.version.version, to_version=None, user=user)
    existing.delete()


# ---------------------------------------------------------------- delete

def _delete_blobs_on_commit(keys):
    def _delete():
        for key in keys:
            try:
                storage.delete_blob(key)
            except Exception:  # a missing blob is fine; log others and keep going
                logger.exception("could not delete registry blob %s", key)

    transaction.on_commit(_delete)


@transaction.atomic
def delete_version(*, version, user=None):
    """Delete one version, its aliases and its stored files (after commit)."""
    keys = list(ModelFile.objects.filter(version=version).values_list("storage_key", flat=True))
    keys += list(InferenceRequest.objects.filter(version=version).exclude(input_key="").values_list("input_key", flat=True))
    for alias in ModelAlias.objects.filter(version=version):
        AliasEvent.objects.create(model=version.model, alias=alias.name, from_version=version.version, to_version=None, user=user)
    version.delete()
    _delete_blobs_on_commit(keys)


@transaction.atomic
def delete_model(*, model):
    """Delete a model with every version; their stored files are removed after commit."""
    keys = list(ModelFile.objects.filter(version__model=model).values_list("storage_key", flat=True))
    keys += list(
        InferenceRequest.objects.filter(version__model=model).exclude(input_key="").values_list("input_key", flat=True)
    )
    model.delete()
    _delete_blobs_on_commit(keys)


# ---------------------------------------------------------------- worker jobs

def _enqueue_on_commit(task, func_path, obj_id, timeout):
    from rq import Queue

    from config.redis import get_connection

    def _enqueue():
        try:
            queue = Queue(task.cluster.queue_name, connection=get_connection())
            queue.enqueue(func_path, obj_id, job_timeout=timeout + 120, job_id=_job_id(func_path, obj_id), result_ttl=3600)
        except Exception as exc:  # Redis down: stay queued and say so, never run inline
            logger.warning("could not enqueue %s %s: %s", func_path, obj_id, exc)
            type(task).objects.filter(pk=task.pk, status=TaskStatus.QUEUED).update(
                message=f"Queued, but the queue (Redis) could not be reached: {exc}. It is sent when Redis is back."
            )

    transaction.on_commit(_enqueue)


def _job_id(func_path, obj_id):
    return f"{func_path.replace('.', '_')}-{obj_id}"


def resend_queued_tasks(older_than_seconds=30):
    """Enqueue again the Queued exports and "try it" requests whose RQ job is gone (Redis was down or lost it).

    Idempotent (the job id is fixed and the task claims its row); returns how many were sent.
    A reconciler calls this periodically; it is harmless to call it more often.
    """
    from datetime import timedelta

    from django.utils import timezone
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    from config.redis import RedisUnavailable, get_connection

    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    connection = get_connection()
    sent = 0
    for model, func_path, timeout in (
        (OnnxExport, "registry.tasks.export_onnx", conf.EXPORT_TIMEOUT),
        (InferenceRequest, "registry.tasks.run_inference", conf.INFERENCE_TIMEOUT),
    ):
        for task in model.objects.select_related("cluster").filter(status=TaskStatus.QUEUED, created_at__lte=cutoff, cluster__isnull=False):
            try:
                Job.fetch(_job_id(func_path, task.pk), connection=connection)
                continue
            except NoSuchJobError:
                pass
            except Exception as exc:
                raise RedisUnavailable(str(exc)) from exc
            from rq import Queue

            Queue(task.cluster.queue_name, connection=connection).enqueue(
                func_path, task.pk, job_timeout=timeout + 120, job_id=_job_id(func_path, task.pk), result_ttl=3600
            )
            model.objects.filter(pk=task.pk, status=TaskStatus.QUEUED).update(message="")
            sent += 1
    return sent


def fail_lost_tasks():
    """Fail exports and "try it" requests still Running well past their time limit (their worker died).

    Returns how many were failed. Terminal states are final, so a late worker cannot overwrite this.
    """
    from datetime import timedelta

    from django.utils import timezone

    failed = 0
    for model, limit in ((OnnxExport, conf.EXPORT_TIMEOUT), (InferenceRequest, conf.INFERENCE_TIMEOUT)):
        cutoff = timezone.now() - timedelta(seconds=limit + 300)
        for task in model.objects.filter(status=TaskStatus.RUNNING, started_at__lt=cutoff):
            failed += task.fail(f"The worker stopped answering: no result {limit + 300} s after the start.")
    return failed


def reconcile_tasks():
    """What a periodic reconciler calls: resend lost queued jobs, fail runaway ones."""
    return {"resent": resend_queued_tasks(), "failed": fail_lost_tasks()}


def _check_cluster(cluster, workspace):
    if cluster is None or cluster.workspace_id != workspace.pk:
        raise RegistrationError("invalid_cluster", "pick a compute cluster of this workspace")


def request_onnx_export(*, version, cluster, opset=None, user=None):
    """Create an OnnxExport and enqueue registry.tasks.export_onnx on the cluster's queue after commit."""
    opset = conf.DEFAULT_OPSET if opset in (None, "") else opset
    try:
        opset = int(opset)
    except (TypeError, ValueError):
        raise RegistrationError("invalid_opset", f"opset {opset!r} is not a number") from None
    if not 7 <= opset <= 23:
        raise RegistrationError("invalid_opset", "the ONNX opset must be between 7 and 23")
    _check_cluster(cluster, version.model.workspace)
    if version.export_blocker:
        raise RegistrationError("not_exportable", version.export_blocker)
    with transaction.atomic():
        export = OnnxExport.objects.create(source_version=version, cluster=cluster, opset=opset, requested_by=user)
        _enqueue_on_commit(export, "registry.tasks.export_onnx", export.pk, conf.EXPORT_TIMEOUT)
    return export


def request_inference(*, version, cluster, upload, user=None):
    """Store the "try it" upload and enqueue registry.tasks.run_inference on the cluster's queue."""
    _check_cluster(cluster, version.model.workspace)
    if version.flavour in (Flavour.STATE_DICT, Flavour.SAFETENSORS) and not version.architecture:
        raise RegistrationError("not_runnable", "a state dict without an architecture cannot be run")
    if version.flavour == Flavour.FULL_PICKLE and not version.trusted:
        raise RegistrationError("not_runnable", "an untrusted full pickle is never loaded")
    name = (upload.name or "").lower()
    kind = InferenceRequest.InputKind.JSON if name.endswith(".json") else InferenceRequest.InputKind.IMAGE
    if kind == InferenceRequest.InputKind.IMAGE and (not version.input_shape or len(version.input_shape) != 4):
        raise RegistrationError("bad_input", "an image needs a (batch, channels, height, width) signature; upload a JSON tensor")
    upload.seek(0)
    try:
        blob = storage.save_stream(upload, kind="registry-try", max_bytes=conf.TRY_MAX_BYTES)
    except storage.TooLarge:
        raise RegistrationError("too_large", f"the upload is larger than {conf.TRY_MAX_BYTES // (1024 * 1024)} MB") from None
    try:
        with transaction.atomic():
            request = InferenceRequest.objects.create(
                version=version, cluster=cluster, input_kind=kind, input_key=blob.key,
                input_name=PurePosixPath(upload.name or "input").name[:255], requested_by=user,
            )
            _enqueue_on_commit(request, "registry.tasks.run_inference", request.pk, conf.INFERENCE_TIMEOUT)
    except BaseException:
        storage.delete_blob(blob.key)
        raise
    return request


def flavour_suffixes(flavour):
    return FLAVOUR_SUFFIXES.get(flavour, ())
