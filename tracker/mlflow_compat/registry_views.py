"""MLflow model registry endpoints on Torchlight's registry: registered models, versions, aliases.

`mlflow.register_model` creates an ordinary, immutable Torchlight
ModelVersion: the logged model's files are copied into registry storage, the
flavour is read from the MLmodel file (`pytorch` → torch_export for
model.pt2, torchscript or full_pickle for model.pth; `onnx` → onnx), the
input shape from its tensor signature. The download URI points at the
version's own files (`mlflow-artifacts:/registered-models/<id>/versions/<n>`),
so `models:/name/<n>` loads exactly what was registered.

Trust: a full pickle runs code when loaded. The registry keeps one only when
the registering user trusts it; here that is the user who logged the run
(their own model, from their own token). A full pickle from another user's
run is refused with PERMISSION_DENIED.
"""

import json
import re
import zipfile

from django.db import transaction

from registry import services as registry
from registry.models import Flavour, InputDtype, ModelAlias, ModelVersion, RegisteredModel
from tracker import storage
from tracker.mlflow_compat import logged_models
from tracker.mlflow_compat.api import mlflow_endpoint, to_int
from tracker.mlflow_compat.errors import MlflowError, already_exists, denied, invalid, not_found
from tracker.mlflow_compat.serializers import millis
from tracker.mlflow_compat.views import get_run, ok
from tracker.models import Artifact

SOURCE_TAG = "mlflow.source"
MODEL_ID_TAG = "mlflow.model_id"
HIDDEN_VERSION_TAGS = {SOURCE_TAG, MODEL_ID_TAG}
DTYPES = {d.value for d in InputDtype}


def _registration_error(exc):
    if exc.status == 404:
        return not_found(exc.message)
    if exc.code == "already_exists":
        return already_exists(exc.message)
    return invalid(exc.message)


# ---------------------------------------------------------------- JSON


def download_uri(version):
    return f"mlflow-artifacts:/registered-models/{version.model_id}/versions/{version.version}"


def version_json(version, model):
    tags = version.tags or {}
    data = {
        "name": model.name,
        "version": str(version.version),
        "creation_timestamp": millis(version.created_at),
        "last_updated_timestamp": millis(version.created_at),
        "user_id": version.created_by.username if version.created_by_id else "",
        "current_stage": "None",
        "description": version.description,
        "source": tags.get(SOURCE_TAG) or download_uri(version),
        "status": "READY",
        "tags": [{"key": k, "value": str(v)} for k, v in sorted(tags.items()) if k not in HIDDEN_VERSION_TAGS],
        "aliases": [a.name for a in version.aliases.all()],
    }
    if version.run_id:
        data["run_id"] = version.run_id.hex
    if tags.get(MODEL_ID_TAG):
        data["model_id"] = tags[MODEL_ID_TAG]
    return data


def model_json(model):
    latest = model.versions.select_related("created_by").prefetch_related("aliases").order_by("-version").first()
    return {
        "name": model.name,
        "creation_timestamp": millis(model.created_at),
        "last_updated_timestamp": millis(model.updated_at),
        "user_id": model.created_by.username if model.created_by_id else "",
        "description": model.description,
        "latest_versions": [version_json(latest, model)] if latest else [],
        "tags": [{"key": k, "value": str(v)} for k, v in sorted((model.tags or {}).items())],
        "aliases": [{"alias": a.name, "version": str(a.version.version)} for a in model.aliases.select_related("version")],
    }


# ---------------------------------------------------------------- lookups


def get_model(ctx, name, write=False):
    if not name:
        raise invalid("Missing value for required parameter 'name'.")
    model = RegisteredModel.objects.select_related("created_by", "workspace").filter(workspace=ctx.workspace, name=name).first()
    if model is None:
        raise not_found(f"Registered Model with name={name} not found")
    ctx.check(model.workspace_id, write)
    return model


def get_version(ctx, params, write=False):
    model = get_model(ctx, params.str("name", required=True), write)
    number = to_int(params.raw("version"), "version") if params.raw("version") not in (None, "") else None
    if number is None:
        raise invalid("Missing value for required parameter 'version'.")
    version = (
        ModelVersion.objects.select_related("created_by").prefetch_related("aliases").filter(model=model, version=number).first()
    )
    if version is None:
        raise not_found(f"Model Version (name={model.name}, version={number}) not found")
    return model, version


# ---------------------------------------------------------------- registered models


@mlflow_endpoint(methods=("POST",))
def registered_model_create(request):
    ctx = request.mlflow
    ctx.require_personal("register models")
    ctx.check(ctx.workspace.pk, write=True)
    params = request.params
    tags = {t["key"]: str(t.get("value", "")) for t in params.list("tags") if isinstance(t, dict) and t.get("key")}
    try:
        model = registry.create_registered_model(
            workspace=ctx.workspace,
            name=params.str("name", required=True),
            user=ctx.user,
            description=params.str("description"),
            tags=tags,
        )
    except registry.RegistrationError as exc:
        if exc.code == "already_exists":
            raise already_exists(f"Registered Model (name={params.str('name')}) already exists.") from None
        raise _registration_error(exc) from None
    return ok({"registered_model": model_json(model)})


@mlflow_endpoint(methods=("GET",))
def registered_model_get(request):
    ctx = request.mlflow
    return ok({"registered_model": model_json(get_model(ctx, request.params.str("name", required=True)))})


@mlflow_endpoint(methods=("PATCH",))
def registered_model_update(request):
    ctx = request.mlflow
    model = get_model(ctx, request.params.str("name", required=True), write=True)
    if request.params.raw("description") is not None:
        model.description = request.params.str("description")
        model.save(update_fields=["description", "updated_at"])
    return ok({"registered_model": model_json(model)})


@mlflow_endpoint(methods=("DELETE",))
def registered_model_delete(request):
    ctx = request.mlflow
    model = get_model(ctx, request.params.str("name", required=True), write=True)
    registry.delete_model(model=model)
    return ok()


@mlflow_endpoint(methods=("POST",))
def registered_model_set_tag(request):
    ctx = request.mlflow
    model = get_model(ctx, request.params.str("name", required=True), write=True)
    model.tags = {**(model.tags or {}), request.params.str("key", required=True): request.params.str("value")}
    model.save(update_fields=["tags", "updated_at"])
    return ok()


@mlflow_endpoint(methods=("GET",))
def registered_model_search(request):
    ctx = request.mlflow
    ctx.check(ctx.workspace.pk)
    models = RegisteredModel.objects.select_related("created_by").filter(workspace=ctx.workspace)
    field, op, value = _simple_filter(request.params.str("filter"), ("name",))
    if field:
        models = _apply(models, "name", op, value)
    max_results = request.params.int("max_results", 100, minimum=1, maximum=1000)
    return ok({"registered_models": [model_json(m) for m in models.order_by("name")[:max_results]]})


def _simple_filter(text, fields):
    """(field, op, value) of a one-condition filter such as name = 'x' or name LIKE 'x%'; (None,)*3 if blank."""
    if not text or not text.strip():
        return None, None, None
    match = re.fullmatch(r"\s*(\w+)\s*(=|!=|LIKE|ILIKE)\s*'((?:[^']|'')*)'\s*", text, re.IGNORECASE)
    if not match or match[1].lower() not in fields:
        raise invalid(f"Invalid filter {text!r}: expected one of {', '.join(fields)} with = != LIKE ILIKE and a quoted string")
    return match[1].lower(), match[2].upper(), match[3].replace("''", "'")


def _apply(qs, field, op, value):
    if op == "=":
        return qs.filter(**{field: value})
    if op == "!=":
        return qs.exclude(**{field: value})
    regex = "^" + "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in value) + "$"
    lookup = "regex" if op == "LIKE" else "iregex"
    return qs.filter(**{f"{field}__{lookup}": regex})


# ---------------------------------------------------------------- model versions


def _resolve_source(ctx, source, run_id, model_id):
    """(run, artifact folder or file) that `source` names: models:/<id>, runs:/<run>/<path>, mlflow-artifacts:/..."""
    from tracker.mlflow_compat.artifacts import resolve

    if source.startswith("models:/") and logged_models.MODEL_ID_RE.match(source[len("models:/") :].strip("/")):
        model_id = source[len("models:/") :].strip("/")
    if model_id and (source.startswith("models:/") or not source):
        _record, run = logged_models.load(ctx, model_id, write=True)
        return run, logged_models.artifact_prefix(model_id)
    if source.startswith("runs:/"):
        rest = source[len("runs:/") :].strip("/")
        run_part, _, path = rest.partition("/")
        run = get_run(ctx, run_part, write=True)
        if not path:
            raise invalid(f"source {source!r} names no artifact path")
        if not Artifact.objects.filter(run=run, path=path).exists() and not Artifact.objects.filter(run=run, path__startswith=path.rstrip("/") + "/").exists():
            # MLflow 3: runs:/<run>/<name> may mean the logged model of that name.
            for tag_record, tag_run in _logged_models_of(run):
                if tag_record["name"] == path:
                    return tag_run, logged_models.artifact_prefix(tag_record["model_id"])
            raise not_found(f"run {run.id.hex} has no artifact or logged model at {path!r}")
        return run, path.rstrip("/")
    if source.startswith("mlflow-artifacts:"):
        path = source[len("mlflow-artifacts:") :].lstrip("/")
        if source.startswith("mlflow-artifacts://"):
            path = path.partition("/")[2]  # mlflow-artifacts://host:port/<path>
        kind, run, sub = resolve(ctx, path, write=False)
        if kind != "run" or not sub:
            raise invalid(f"source {source!r} does not name a run's artifact")
        ctx.check_run(run, run.experiment.workspace_id, write=True)
        return run, sub
    raise invalid(f"Unsupported source {source!r}: use models:/<model id>, runs:/<run id>/<path> or mlflow-artifacts:/ URIs")


def _logged_models_of(run):
    from tracker.models import RunTag

    for tag in RunTag.objects.filter(run=run, key__startswith=logged_models.RECORD_PREFIX):
        yield json.loads(tag.value), run


def _read_mlmodel(run, folder):
    row = Artifact.objects.filter(run=run, path=f"{folder}/MLmodel").first()
    if row is None:
        return None
    with storage.open_blob(row.storage_key) as fh:
        text = fh.read(1024 * 1024).decode("utf-8", "replace")
    try:
        import yaml
    except ImportError:  # without PyYAML: flavours from the file names only
        return {"flavors": {"pytorch": {}} if "\n  pytorch:" in text else {}}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise invalid(f"the MLmodel file is not valid YAML: {exc}") from None
    return data if isinstance(data, dict) else None


def _is_torchscript(row):
    try:
        with storage.open_blob(row.storage_key) as fh, zipfile.ZipFile(fh) as archive:
            return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _signature_shape(mlmodel):
    """(input shape with batch 1, dtype) from a single-tensor MLmodel signature, else (None, float32)."""
    raw = ((mlmodel or {}).get("signature") or {}).get("inputs")
    try:
        specs = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        specs = None
    if not specs or len(specs) != 1 or specs[0].get("type") != "tensor":
        return None, InputDtype.FLOAT32
    spec = specs[0].get("tensor-spec") or {}
    shape = [1 if not isinstance(d, int) or d < 1 else d for d in spec.get("shape") or []]
    dtype = spec.get("dtype") if spec.get("dtype") in DTYPES else InputDtype.FLOAT32
    return (shape or None), dtype


def registration_options(run, folder):
    """Keyword options for registry.register_from_run read from the MLmodel file and the file names."""
    exact = Artifact.objects.filter(run=run, path=folder).first()
    if exact is not None:  # a single file (runs:/<run>/model.pt)
        return {"flavour": registry.suggested_flavour(folder)}
    rows = {a.path[len(folder) + 1 :]: a for a in Artifact.objects.filter(run=run, path__startswith=folder + "/")}
    mlmodel = _read_mlmodel(run, folder)
    flavors = (mlmodel or {}).get("flavors") or {}
    shape, dtype = _signature_shape(mlmodel)
    options = {"input_shape": shape, "input_dtype": dtype}
    if "pytorch" in flavors:
        data = str((flavors["pytorch"] or {}).get("model_data") or "data").strip("/")
        if f"{data}/model.pt2" in rows:
            options["flavour"] = Flavour.TORCH_EXPORT
        elif f"{data}/model.pth" in rows:
            options["flavour"] = Flavour.TORCHSCRIPT if _is_torchscript(rows[f"{data}/model.pth"]) else Flavour.FULL_PICKLE
        elif any(p.endswith("state_dict.pth") for p in rows):
            options["flavour"] = Flavour.STATE_DICT
        else:
            raise invalid(f"the pytorch model at {folder!r} has no {data}/model.pt2 or {data}/model.pth")
        return options
    if "onnx" in flavors:
        options["flavour"] = Flavour.ONNX
        return options
    if mlmodel is not None:
        names = ", ".join(sorted(flavors)) or "none"
        raise invalid(f"Torchlight's registry holds PyTorch and ONNX models; this MLmodel has the flavours: {names}")
    paths = list(rows)
    options["flavour"] = registry.suggested_flavour(paths[0]) if len(paths) == 1 else Flavour.STATE_DICT
    return options


@mlflow_endpoint(methods=("POST",))
def model_version_create(request):
    ctx = request.mlflow
    ctx.require_personal("register models")
    params = request.params
    model = get_model(ctx, params.str("name", required=True), write=True)
    source = params.str("source").strip()
    model_id = params.str("model_id").strip()
    if not source and not model_id:
        raise invalid("Missing value for required parameter 'source'.")
    run, folder = _resolve_source(ctx, source, params.str("run_id"), model_id)
    if run.experiment.workspace_id != model.workspace_id:
        raise invalid("the model's source run is in another workspace than the registered model")
    options = registration_options(run, folder)
    if options["flavour"] == Flavour.FULL_PICKLE:
        if run.created_by_id != ctx.user.pk:
            raise denied(
                "this model is a full pickle (loading it runs code) logged by another user; "
                "only the user who logged it can register it"
            )
        options["trusted"] = True
    tags = {t["key"]: str(t.get("value", "")) for t in params.list("tags") if isinstance(t, dict) and t.get("key")}
    tags[SOURCE_TAG] = source or f"models:/{model_id}"
    if model_id or folder.startswith("models/m-"):
        tags[MODEL_ID_TAG] = model_id or folder.split("/", 1)[1]
    try:
        version = registry.register_from_run(
            run=run,
            path=folder,
            name=model.name,
            user=ctx.user,
            description=params.str("description"),
            tags=tags,
            validate=False,  # as in MLflow: registering records the files; loading happens in workers
            **options,
        )
    except registry.RegistrationError as exc:
        raise _registration_error(exc) from None
    except storage.StorageError as exc:
        raise MlflowError("IO_ERROR", str(exc), status=507) from None
    version = ModelVersion.objects.select_related("created_by").prefetch_related("aliases").get(pk=version.pk)
    return ok({"model_version": version_json(version, model)})


@mlflow_endpoint(methods=("GET",))
def model_version_get(request):
    model, version = get_version(request.mlflow, request.params)
    return ok({"model_version": version_json(version, model)})


@mlflow_endpoint(methods=("GET",))
def model_version_download_uri(request):
    _model, version = get_version(request.mlflow, request.params)
    return ok({"artifact_uri": download_uri(version)})


@mlflow_endpoint(methods=("PATCH",))
def model_version_update(request):
    model, version = get_version(request.mlflow, request.params, write=True)
    if request.params.raw("description") is not None:
        version.description = request.params.str("description")
        version.save(update_fields=["description"])
    return ok({"model_version": version_json(version, model)})


@mlflow_endpoint(methods=("DELETE",))
def model_version_delete(request):
    _model, version = get_version(request.mlflow, request.params, write=True)
    registry.delete_version(version=version, user=request.mlflow.user)
    return ok()


@mlflow_endpoint(methods=("POST",))
def model_version_set_tag(request):
    _model, version = get_version(request.mlflow, request.params, write=True)
    key = request.params.str("key", required=True)
    if key in HIDDEN_VERSION_TAGS:
        raise invalid(f"the tag {key!r} is kept by Torchlight")
    version.tags = {**(version.tags or {}), key: request.params.str("value")}
    version.save(update_fields=["tags"])
    return ok()


@mlflow_endpoint(methods=("GET",))
def model_version_search(request):
    ctx = request.mlflow
    ctx.check(ctx.workspace.pk)
    versions = ModelVersion.objects.select_related("model", "created_by").prefetch_related("aliases").filter(
        model__workspace=ctx.workspace
    )
    field, op, value = _simple_filter(request.params.str("filter"), ("name", "run_id"))
    if field == "name":
        versions = _apply(versions, "model__name", op, value)
    elif field == "run_id":
        from tracker.mlflow_compat.serializers import parse_run_id

        run_uuid = parse_run_id(value)
        versions = versions.filter(run_id=run_uuid) if op == "=" else versions.exclude(run_id=run_uuid)
    max_results = request.params.int("max_results", 10_000, minimum=1, maximum=200_000)
    page = versions.order_by("model__name", "-version")[:max_results]
    return ok({"model_versions": [version_json(v, v.model) for v in page]})


@mlflow_endpoint(methods=("POST",))
def latest_versions(request):
    ctx = request.mlflow
    model = get_model(ctx, request.params.str("name", required=True))
    stages = [str(s).lower() for s in request.params.list("stages")]
    if stages and "none" not in stages:
        return ok({"model_versions": []})  # Torchlight has aliases, not stages: every version is in stage "None"
    latest = model.versions.select_related("created_by").prefetch_related("aliases").order_by("-version").first()
    return ok({"model_versions": [version_json(latest, model)] if latest else []})


@mlflow_endpoint(methods=("POST", "DELETE", "GET"))
def alias(request):
    ctx = request.mlflow
    params = request.params
    if request.method == "GET":
        model = get_model(ctx, params.str("name", required=True))
        row = ModelAlias.objects.select_related("version__created_by").filter(model=model, name=params.str("alias", required=True)).first()
        if row is None:
            raise not_found(f"Registered model alias {params.str('alias')} not found.")
        version = ModelVersion.objects.select_related("created_by").prefetch_related("aliases").get(pk=row.version_id)
        return ok({"model_version": version_json(version, model)})
    if request.method == "DELETE":
        model = get_model(ctx, params.str("name", required=True), write=True)
        try:
            registry.delete_alias(model=model, alias=params.str("alias", required=True), user=ctx.user)
        except registry.RegistrationError as exc:
            raise _registration_error(exc) from None
        return ok()
    model, version = get_version(ctx, params, write=True)
    try:
        with transaction.atomic():
            registry.set_alias(model=model, alias=params.str("alias", required=True), version=version, user=ctx.user)
    except registry.RegistrationError as exc:
        raise _registration_error(exc) from None
    return ok()
