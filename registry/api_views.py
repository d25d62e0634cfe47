"""Registry REST API (token auth, JSON): models, versions, files, aliases, ONNX exports.

The workspace is `?workspace=<slug>` (default: the token user's first); a
run token reaches only its run's workspace and may only register versions
from its own run.
"""

from django.urls import reverse

from jobs.models import ComputeCluster
from registry import downloads, services
from registry.models import ModelAlias, ModelVersion, OnnxExport, RegisteredModel
from tracker.api.base import ApiError, api_endpoint, api_get_run, api_get_workspace, json_response, not_found
from tracker.models import Role


def _workspace(request, min_role=Role.READER):
    workspace = api_get_workspace(request, request.GET.get("workspace") or None, min_role)
    if min_role != Role.READER and request.api_token.is_run_token:
        raise ApiError(403, "permission_denied", "a run token cannot change the registry; use a personal token")
    return workspace


def _model(request, name, min_role=Role.READER):
    workspace = _workspace(request, min_role)
    model = RegisteredModel.objects.select_related("workspace").filter(workspace=workspace, name=name).first()
    if model is None:
        raise not_found("model")
    return model


def _version(request, name, number, min_role=Role.READER):
    model = _model(request, name, min_role)
    version = model.versions.select_related("model__workspace", "run__experiment", "source_version").filter(version=number).first()
    if version is None:
        raise not_found("version")
    return version


def _raise(exc):
    raise ApiError(exc.status, exc.code, exc.message, exc.details)


def version_json(v):
    base = f"/api/v1/models/{v.model.name}/versions/{v.version}"
    return {
        "model": v.model.name,
        "version": v.version,
        "flavour": v.flavour,
        "framework": v.framework,
        "framework_version": v.framework_version,
        "architecture": v.architecture,
        "arch_kwargs": v.arch_kwargs,
        "input_shape": v.input_shape,
        "input_dtype": v.input_dtype,
        "output_shape": v.output_shape,
        "description": v.description,
        "tags": v.tags,
        "trusted": v.trusted,
        "run_id": str(v.run_id) if v.run_id else None,
        "experiment_id": v.run.experiment_id if v.run_id and v.run else None,
        "source_version": v.source_version.version if v.source_version_id and v.source_version else None,
        "parity": v.parity,
        "aliases": [a.name for a in v.aliases.all()],
        "files": [
            {"id": f.pk, "path": f.path, "size": f.size, "sha256": f.sha256, "download_url": f"{base}/files/{f.pk}"}
            for f in v.files.all()
        ],
        "total_size": v.total_size,
        "download_url": f"{base}/download",
        "page_url": reverse("registry:version-detail", args=[v.model_id, v.version]),
        "created_at": v.created_at.isoformat(),
    }


def model_json(m, versions=None):
    data = {
        "name": m.name,
        "workspace": m.workspace.slug,
        "description": m.description,
        "tags": m.tags,
        "aliases": {a.name: a.version.version for a in m.aliases.select_related("version")},
        "created_at": m.created_at.isoformat(),
        "updated_at": m.updated_at.isoformat(),
    }
    latest = m.versions.order_by("-version").values_list("version", flat=True).first()
    data["latest_version"] = latest
    if versions is not None:
        data["versions"] = [version_json(v) for v in versions]
    return data


def export_json(e):
    return {
        "id": e.pk,
        "model": e.source_version.model.name,
        "source_version": e.source_version.version,
        "status": e.status,
        "opset": e.opset,
        "cluster": e.cluster.name if e.cluster else None,
        "progress": e.progress,
        "stage": e.stage,
        "message": e.message,
        "log": e.log[-20000:],
        "result_version": e.result_version.version if e.result_version else None,
        "parity": e.result_version.parity if e.result_version else None,
        "created_at": e.created_at.isoformat(),
        "finished_at": e.finished_at.isoformat() if e.finished_at else None,
    }


@api_endpoint(methods=("GET", "POST"))
def models(request):
    if request.method == "POST":
        workspace = _workspace(request, Role.CONTRIBUTOR)
        body = request.json if isinstance(request.json, dict) else {}
        try:
            model = services.create_registered_model(
                workspace=workspace, name=str(body.get("name", "")), user=request.api_user,
                description=str(body.get("description", "")), tags=body.get("tags") if isinstance(body.get("tags"), dict) else {},
            )
        except services.RegistrationError as exc:
            _raise(exc)
        return json_response(model_json(model, []), status=201)
    workspace = _workspace(request)
    rows = RegisteredModel.objects.for_workspace(workspace).with_latest_version().prefetch_related("aliases__version")
    return json_response(
        {
            "models": [
                {
                    "name": m.name, "description": m.description, "latest_version": m.latest_version_number,
                    "versions": m.version_count, "aliases": {a.name: a.version.version for a in m.aliases.all()},
                }
                for m in rows
            ]
        }
    )


@api_endpoint(methods=("GET", "DELETE"))
def model_detail(request, name):
    if request.method == "DELETE":
        model = _model(request, name, Role.OWNER)
        if model.aliases.exists() and request.GET.get("force") != "true":
            raise ApiError(409, "has_aliases", "the model has aliases in use; repeat with ?force=true to delete it anyway")
        services.delete_model(model=model)
        return json_response({"deleted": name})
    model = _model(request, name)
    versions = model.versions.select_related("model__workspace", "run__experiment", "source_version").prefetch_related("files", "aliases")
    return json_response(model_json(model, versions))


def _register_body(request, model_name):
    body = request.json if isinstance(request.json, dict) else {}
    run_id = body.get("run_id")
    path = body.get("path")
    if not run_id or not isinstance(path, str):
        raise ApiError(400, "invalid_request", "run_id and path (a file or folder in the run's artifacts) are required")
    # The run decides the workspace; a personal token needs the contributor role there,
    # a run token may register only from its own run.
    run = api_get_run(request, run_id, Role.CONTRIBUTOR)
    slug = request.GET.get("workspace")
    if slug and run.experiment.workspace.slug != slug:
        raise not_found("run")
    allowed = {"flavour", "architecture", "arch_kwargs", "input_shape", "input_dtype", "description", "tags", "trusted"}
    unknown = sorted(set(body) - allowed - {"run_id", "path"})
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown fields: {', '.join(unknown)}")
    options = {k: body[k] for k in allowed if k in body and body[k] is not None}
    if "arch_kwargs" in options and not isinstance(options["arch_kwargs"], (dict, list)):
        raise ApiError(400, "invalid_arch_arg", "arch_kwargs is an object of keyword arguments")
    if "tags" in options and not isinstance(options["tags"], dict):
        raise ApiError(400, "invalid_request", "tags is an object")
    return run, path, options


@api_endpoint(methods=("GET", "POST"))
def versions(request, name):
    if request.method == "POST":
        run, path, options = _register_body(request, name)
        try:
            version = services.register_from_run(run=run, path=path, name=name, user=request.api_user, **options)
        except services.RegistrationError as exc:
            _raise(exc)
        return json_response(version_json(version), status=201)
    model = _model(request, name)
    rows = model.versions.select_related("model__workspace", "run__experiment", "source_version").prefetch_related("files", "aliases")
    return json_response({"versions": [version_json(v) for v in rows]})


@api_endpoint(methods=("GET", "DELETE"))
def version_detail(request, name, number):
    if request.method == "DELETE":
        version = _version(request, name, number, Role.OWNER)
        services.delete_version(version=version, user=request.api_user)
        return json_response({"deleted": number})
    return json_response(version_json(_version(request, name, number)))


@api_endpoint(methods=("GET",))
def file_download(request, name, number, file_id):
    version = _version(request, name, number)
    model_file = version.files.filter(pk=file_id).first()
    if model_file is None:
        raise not_found("file")
    return downloads.file_response(request, model_file)


@api_endpoint(methods=("GET",))
def version_download(request, name, number):
    return downloads.zip_response(_version(request, name, number))


@api_endpoint(methods=("POST",))
def version_export(request, name, number):
    version = _version(request, name, number, Role.CONTRIBUTOR)
    body = request.json if isinstance(request.json, dict) else {}
    clusters = ComputeCluster.objects.filter(workspace=version.model.workspace)
    cluster_name = body.get("cluster")
    cluster = clusters.filter(name=cluster_name).first() if cluster_name else clusters.order_by("pk").first()
    if cluster is None:
        raise ApiError(400, "invalid_cluster", f"no cluster {cluster_name!r} in this workspace" if cluster_name else "the workspace has no cluster")
    try:
        export = services.request_onnx_export(version=version, cluster=cluster, opset=body.get("opset"), user=request.api_user)
    except services.RegistrationError as exc:
        _raise(exc)
    return json_response(export_json(export), status=202)


@api_endpoint(methods=("GET",))
def export_detail(request, export_id):
    workspace = _workspace(request)
    export = (
        OnnxExport.objects.select_related("source_version__model", "cluster", "result_version")
        .filter(pk=export_id, source_version__model__workspace=workspace)
        .first()
    )
    if export is None:
        raise not_found("export")
    return json_response(export_json(export))


@api_endpoint(methods=("GET", "PUT", "DELETE"))
def alias_detail(request, name, alias):
    if request.method == "GET":
        model = _model(request, name)
        found = ModelAlias.objects.select_related("version").filter(model=model, name=alias).first()
        if found is None:
            raise not_found("alias")
        version = ModelVersion.objects.select_related("model__workspace", "run__experiment", "source_version").get(pk=found.version_id)
        return json_response(version_json(version))
    model = _model(request, name, Role.CONTRIBUTOR)
    try:
        if request.method == "DELETE":
            services.delete_alias(model=model, alias=alias, user=request.api_user)
            return json_response({"deleted": alias})
        body = request.json if isinstance(request.json, dict) else {}
        number = body.get("version")
        if not isinstance(number, int) or isinstance(number, bool):
            raise ApiError(400, "invalid_request", "version (an integer) is required")
        version = model.versions.filter(version=number).first()
        if version is None:
            raise not_found("version")
        services.set_alias(model=model, alias=alias, version=version, user=request.api_user)
    except services.RegistrationError as exc:
        _raise(exc)
    return json_response({"alias": alias, "version": number})
