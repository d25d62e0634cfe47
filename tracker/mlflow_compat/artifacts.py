"""The artifact proxy (`mlflow-artifacts:/...` URIs): uploads, downloads and listings through Torchlight.

    <experiment id>/<run id>/artifacts/<path>          a run's artifact (logical path), as Artifact rows
    registered-models/<model pk>/versions/<n>/<path>   a registry version's files (read-only)

Uploads stream into storage under server-generated keys (tracker.storage);
the logical path is checked by tracker.services and never touches the
filesystem. Listings answer the entries directly under a folder.
"""

from django.http import FileResponse

from tracker import services, storage
from tracker.mlflow_compat.api import mlflow_endpoint
from tracker.mlflow_compat.errors import MlflowError, denied, invalid, not_found
from tracker.mlflow_compat.views import get_run, ok
from tracker.models import Artifact

REGISTRY_ROOT = "registered-models"


def _children(entries, prefix):
    """MLflow FileInfo dicts for the entries (path, size) directly under `prefix` ('' = the root)."""
    base = prefix + "/" if prefix else ""
    files, dirs = {}, set()
    for path, size in entries:
        if not path.startswith(base):
            continue
        rest = path[len(base) :]
        head, sep, _tail = rest.partition("/")
        if sep:
            dirs.add(head)
        elif head:
            files[head] = size
    infos = [{"path": d, "is_dir": True} for d in sorted(dirs - set(files))]
    infos += [{"path": name, "is_dir": False, "file_size": size} for name, size in sorted(files.items())]
    return infos


def listing(run, prefix):
    """The entries directly under `prefix` of the run's artifacts; a file's own entry when `prefix` names one."""
    if prefix:
        exact = Artifact.objects.filter(run=run, path=prefix).values_list("path", "size").first()
        if exact is not None:
            return [{"path": prefix.rsplit("/", 1)[-1], "is_dir": False, "file_size": exact[1]}]
        rows = Artifact.objects.filter(run=run, path__startswith=prefix + "/").values_list("path", "size")
    else:
        rows = Artifact.objects.filter(run=run).values_list("path", "size")
    return _children(rows, prefix)


def _registry_version(ctx, parts):
    from registry.models import ModelVersion

    if len(parts) < 4 or parts[2] != "versions" or not parts[1].isdigit() or not parts[3].isdigit():
        raise not_found("no such registered model version")
    version = (
        ModelVersion.objects.select_related("model").filter(model_id=int(parts[1]), version=int(parts[3])).first()
    )
    if version is None or version.model.workspace_id not in ctx.roles:
        raise not_found("no such registered model version")
    return version, "/".join(parts[4:])


def resolve(ctx, path, write=False):
    """("run", run, logical path) or ("registry", version, file path) for an artifact proxy path."""
    parts = [p for p in (path or "").strip("/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise invalid("artifact paths may not contain '..'")
    if parts and parts[0] == REGISTRY_ROOT:
        if write:
            raise denied("registered model versions are immutable")
        version, sub = _registry_version(ctx, parts)
        return "registry", version, sub
    if len(parts) < 3 or parts[2] != "artifacts":
        raise not_found(f"no artifacts at {path!r}: expected <experiment id>/<run id>/artifacts/<path>")
    run = get_run(ctx, parts[1], write=write)
    return "run", run, "/".join(parts[3:])


@mlflow_endpoint(methods=("GET",))
def artifact_list(request):
    ctx = request.mlflow
    kind, obj, sub = resolve(ctx, request.params.str("path"))
    if kind == "run":
        return ok({"files": listing(obj, sub)})
    rows = obj.files.values_list("path", "size")
    exact = [r for r in rows if r[0] == sub]
    if exact:
        return ok({"files": [{"path": sub.rsplit("/", 1)[-1], "is_dir": False, "file_size": exact[0][1]}]})
    return ok({"files": _children(rows, sub)})


@mlflow_endpoint(methods=("GET", "PUT", "DELETE"), json_body=False)
def artifact_file(request, path):
    ctx = request.mlflow
    write = request.method != "GET"
    kind, obj, sub = resolve(ctx, path, write=write)
    if request.method == "PUT":
        try:
            services.store_artifact(obj, sub, request, content_type=request.content_type or "")
        except services.InvalidInput as exc:
            raise invalid(str(exc)) from None
        except storage.TooLarge as exc:
            raise MlflowError("RESOURCE_LIMIT_EXCEEDED", str(exc), status=413) from None
        except storage.StorageError as exc:
            raise MlflowError("IO_ERROR", str(exc), status=507) from None
        return ok()
    if request.method == "DELETE":
        if kind != "run":
            raise denied("registered model versions are immutable")
        rows = Artifact.objects.filter(run=obj, path=sub) if sub else Artifact.objects.filter(run=obj)
        if sub and not rows.exists():
            rows = Artifact.objects.filter(run=obj, path__startswith=sub + "/")
        keys = list(rows.values_list("storage_key", flat=True))
        rows.delete()
        for key in keys:
            storage.delete_blob(key)
        return ok()
    if kind == "run":
        row = Artifact.objects.filter(run=obj, path=sub).first() if sub else None
    else:
        row = obj.files.filter(path=sub).first() if sub else None
    if row is None:
        raise not_found(f"no artifact at {sub!r}")
    content_type = getattr(row, "content_type", "") or "application/octet-stream"
    response = FileResponse(storage.open_blob(row.storage_key), content_type=content_type)
    response["Content-Length"] = str(row.size)
    return response
