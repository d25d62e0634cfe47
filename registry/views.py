"""Registry pages: model list, model, version, register, aliases, delete, downloads, export, try it."""

import math

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from registry import downloads, services
from registry.forms import AliasForm, ExportForm, RunRegisterForm, TryForm, UploadRegisterForm
from registry.models import InferenceRequest, ModelAlias, ModelVersion, OnnxExport, RegisteredModel
from tracker.access import get_run_for_user, get_workspace_for_user, require_role
from tracker.models import MetricSeries, Role


def _get_model_for_user(user, pk, min_role=Role.READER):
    model = RegisteredModel.objects.select_related("workspace").filter(pk=pk).first()
    if model is None:
        raise Http404
    require_role(user, model.workspace, min_role)
    return model


def _get_version_for_user(user, pk, version, min_role=Role.READER):
    model = _get_model_for_user(user, pk, min_role)
    found = (
        ModelVersion.objects.select_related("model__workspace", "run__experiment", "source_version", "created_by")
        .filter(model=model, version=version)
        .first()
    )
    if found is None:
        raise Http404
    return found


@login_required
@require_GET
def model_list(request, slug):
    workspace = get_workspace_for_user(request.user, slug)
    models = (
        RegisteredModel.objects.for_workspace(workspace)
        .with_latest_version()
        .prefetch_related(Prefetch("aliases", queryset=ModelAlias.objects.select_related("version")))
    )
    return render(request, "registry/model_list.html", {"workspace": workspace, "models": models})


def _metric_comparison(versions):
    """(keys, rows): the final value of each metric of each version's run."""
    run_ids = {v.run_id for v in versions if v.run_id}
    series = MetricSeries.objects.filter(run_id__in=run_ids).values("run_id", "key", "last_value", "count")
    by_run = {}
    for s in series:
        value = s["last_value"] if s["last_value"] is not None or not s["count"] else math.nan
        by_run.setdefault(s["run_id"], {})[s["key"]] = value
    keys = sorted({k for values in by_run.values() for k in values})[:30]
    rows = [(v, [by_run.get(v.run_id, {}).get(k) for k in keys]) for v in versions if v.run_id in by_run]
    return keys, rows


@login_required
@require_GET
def model_detail(request, pk):
    model = _get_model_for_user(request.user, pk)
    versions = list(
        model.versions.select_related("run__experiment", "created_by", "source_version").prefetch_related("aliases")
    )
    aliases = list(model.aliases.select_related("version", "updated_by"))
    events = list(model.alias_events.select_related("user")[:20])
    keys, rows = _metric_comparison(versions)
    membership = require_role(request.user, model.workspace)
    return render(
        request,
        "registry/model_detail.html",
        {
            "workspace": model.workspace, "model": model, "versions": versions, "aliases": aliases,
            "events": events, "metric_keys": keys, "metric_rows": rows,
            "can_edit": membership.allows(Role.CONTRIBUTOR), "is_owner": membership.allows(Role.OWNER),
            "alias_form": AliasForm(initial={"version": versions[0].version if versions else 1}),
        },
    )


def _snippet(version, request):
    base = request.build_absolute_uri(reverse("registry:version-zip", args=[version.model_id, version.version]))
    main = version.files.all()[0].path if version.files.all() else "model.pt"
    lines = [
        "# Download the version (a zip of its files) with your browser or the API, then:",
        f"# {base}",
        "import zipfile",
        f'zipfile.ZipFile("{version.model.name.replace(" ", "_")}-v{version.version}.zip").extractall("model")',
    ]
    if version.flavour == "onnx":
        lines += ["import numpy as np", "import onnxruntime as ort", f'session = ort.InferenceSession("model/{main}")']
        if version.input_shape:
            lines.append(f"x = np.random.rand({', '.join(str(d) for d in version.input_shape)}).astype(np.{version.input_dtype})")
            lines.append("print(session.run(None, {session.get_inputs()[0].name: x})[0])")
        return "\n".join(lines)
    lines.append("import torch")
    if version.flavour in ("state_dict", "safetensors"):
        kind, _, name = version.architecture.partition(":")
        kwargs = ", ".join(f"{k}={v!r}" for k, v in (version.arch_kwargs or {}).items())
        if kind == "torchvision":
            lines += ["import torchvision", f'model = torchvision.models.get_model("{name}", weights=None{", " + kwargs if kwargs else ""})']
        elif kind:
            lines += [f"from {kind} import {name}  # from the producing run's source", f"model = {name}({kwargs})"]
        else:
            lines.append("model = ...  # build the architecture these weights belong to")
        if version.flavour == "safetensors":
            lines += ["from safetensors.torch import load_file", f'model.load_state_dict(load_file("model/{main}"))']
        else:
            lines.append(f'model.load_state_dict(torch.load("model/{main}", weights_only=True))')
    elif version.flavour == "torchscript":
        lines.append(f'model = torch.jit.load("model/{main}")')
    elif version.flavour == "torch_export":
        lines.append(f'model = torch.export.load("model/{main}").module()')
    elif version.flavour == "full_pickle":
        lines.append(f'model = torch.load("model/{main}", weights_only=False)  # runs code from the pickle: only if you trust it')
    lines.append("model.eval()")
    if version.input_shape:
        lines.append(f"print(model(torch.rand({', '.join(str(d) for d in version.input_shape)})))")
    return "\n".join(lines)


@login_required
@require_GET
def version_detail(request, pk, version):
    v = _get_version_for_user(request.user, pk, version)
    membership = require_role(request.user, v.model.workspace)
    files = list(v.files.all())
    v._prefetched_objects_cache = {"files": files}  # reuse the list in spec/snippet
    run = v.run
    params = list(run.params.all()) if run else []
    metrics = list(run.metric_series.all()) if run else []
    job = getattr(run, "job", None) if run else None
    exports = list(v.onnx_exports.select_related("cluster", "result_version")[:10])
    tries = list(v.inference_requests.select_related("cluster")[:5])
    derived = list(v.derived_versions.all())
    return render(
        request,
        "registry/version_detail.html",
        {
            "workspace": v.model.workspace, "model": v.model, "version": v, "files": files, "run": run,
            "params": params, "metrics": metrics, "job": job, "exports": exports, "tries": tries, "derived": derived,
            "aliases": list(v.aliases.all()), "snippet": _snippet(v, request),
            "can_edit": membership.allows(Role.CONTRIBUTOR),
            "export_form": ExportForm(workspace=v.model.workspace),
            "try_form": TryForm(workspace=v.model.workspace),
            "same_sha": _same_sha_versions(v, files),
        },
    )


def _same_sha_versions(version, files):
    if not files:
        return []
    digest = {f.path: f.sha256 for f in files}
    candidates = ModelVersion.objects.filter(model=version.model, files__sha256__in=digest.values()).exclude(pk=version.pk)
    return sorted({c.version for c in candidates})


def _render_register_errors(request, run, form, error=None):
    if error is not None:
        form.add_error(None, error)
    for message in [*form.non_field_errors(), *(f"{k}: {e}" for k, errs in form.errors.items() if k != "__all__" for e in errs)]:
        messages.error(request, message)


@login_required
@require_POST
def register_from_run(request, run_id):
    run = get_run_for_user(request.user, run_id, Role.CONTRIBUTOR)
    form = RunRegisterForm(request.POST)
    if form.is_valid():
        try:
            version = services.register_from_run(
                run=run, path=form.cleaned_data["path"], name=form.cleaned_data["name"], user=request.user,
                **form.version_options(),
            )
        except services.ArtifactNotFound:
            raise Http404 from None
        except services.RegistrationError as exc:
            _render_register_errors(request, run, form, exc.message)
        else:
            messages.success(request, f"Registered {version.model.name} v{version.version}.")
            return redirect("registry:version-detail", version.model_id, version.version)
    else:
        _render_register_errors(request, run, form)
    return render(
        request, "registry/register_run.html", {"workspace": run.experiment.workspace, "run": run, "form": form}, status=400
    )


@login_required
def register_upload(request, slug):
    workspace = get_workspace_for_user(request.user, slug, Role.CONTRIBUTOR)
    form = UploadRegisterForm(request.POST or None, request.FILES or None, initial={"name": request.GET.get("name", "")})
    status = 200
    if request.method == "POST":
        status = 400
        if form.is_valid():
            try:
                version = services.register_from_upload(
                    workspace=workspace, name=form.cleaned_data["name"], user=request.user,
                    uploaded_file=form.cleaned_data["file"], **form.version_options(),
                )
            except services.RegistrationError as exc:
                form.add_error(None, exc.message)
            else:
                messages.success(request, f"Registered {version.model.name} v{version.version}.")
                return redirect("registry:version-detail", version.model_id, version.version)
    return render(request, "registry/register_upload.html", {"workspace": workspace, "form": form}, status=status)


@login_required
@require_POST
def alias_set(request, pk):
    model = _get_model_for_user(request.user, pk, Role.CONTRIBUTOR)
    form = AliasForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            for e in errors:
                messages.error(request, e)
        return redirect("registry:model-detail", model.pk)
    version = model.versions.filter(version=form.cleaned_data["version"]).first()
    if version is None:
        messages.error(request, f"{model.name} has no version {form.cleaned_data['version']}.")
        return redirect("registry:model-detail", model.pk)
    try:
        services.set_alias(model=model, alias=form.cleaned_data["alias"], version=version, user=request.user)
    except services.RegistrationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{form.cleaned_data['alias']} → v{version.version}")
    return redirect("registry:model-detail", model.pk)


@login_required
@require_POST
def alias_delete(request, pk, alias):
    model = _get_model_for_user(request.user, pk, Role.CONTRIBUTOR)
    try:
        services.delete_alias(model=model, alias=alias, user=request.user)
    except services.RegistrationError:
        raise Http404 from None
    messages.success(request, f"Alias {alias} deleted.")
    return redirect("registry:model-detail", model.pk)


@login_required
def model_delete(request, pk):
    model = _get_model_for_user(request.user, pk, Role.OWNER)
    aliases = list(model.aliases.select_related("version"))
    if request.method == "POST" and (not aliases or request.POST.get("confirm") == model.name):
        workspace = model.workspace
        name = model.name
        services.delete_model(model=model)
        messages.success(request, f"Model {name} and its files were deleted.")
        return redirect("registry:model-list", workspace.slug)
    status = 400 if request.method == "POST" else 200
    if status == 400:
        messages.error(request, "Type the model's name to confirm: it has aliases in use.")
    return render(
        request, "registry/model_delete.html",
        {"workspace": model.workspace, "model": model, "aliases": aliases, "version_count": model.versions.count()},
        status=status,
    )


@login_required
@require_GET
def download_file(request, pk, version, file_id):
    v = _get_version_for_user(request.user, pk, version)
    model_file = v.files.filter(pk=file_id).first()
    if model_file is None:
        raise Http404
    return downloads.file_response(request, model_file)


@login_required
@require_GET
def download_zip(request, pk, version):
    v = _get_version_for_user(request.user, pk, version)
    return downloads.zip_response(v)


@login_required
@require_POST
def export_request(request, pk, version):
    v = _get_version_for_user(request.user, pk, version, Role.CONTRIBUTOR)
    form = ExportForm(request.POST, workspace=v.model.workspace)
    if form.is_valid():
        try:
            services.request_onnx_export(
                version=v, cluster=form.cleaned_data["cluster"], opset=form.cleaned_data["opset"], user=request.user
            )
        except services.RegistrationError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, "ONNX export queued.")
    else:
        for field, errors in form.errors.items():
            for e in errors:
                messages.error(request, f"{field}: {e}")
    return redirect("registry:version-detail", v.model_id, v.version)


def export_json(export):
    result = export.result_version
    return {
        "id": export.pk, "status": export.status, "progress": export.progress, "stage": export.stage,
        "opset": export.opset, "message": export.message, "log": export.log[-20000:],
        "cluster": export.cluster.name if export.cluster else None,
        "created_at": export.created_at.isoformat(),
        "started_at": export.started_at.isoformat() if export.started_at else None,
        "finished_at": export.finished_at.isoformat() if export.finished_at else None,
        "result_version": result.version if result else None,
        "result_url": reverse("registry:version-detail", args=[result.model_id, result.version]) if result else None,
        "parity": result.parity if result else None,
    }


@login_required
@require_GET
def export_status(request, pk, export_id):
    model = _get_model_for_user(request.user, pk)
    export = OnnxExport.objects.select_related("cluster", "result_version").filter(pk=export_id, source_version__model=model).first()
    if export is None:
        raise Http404
    return JsonResponse(export_json(export))


@login_required
@require_POST
def try_request(request, pk, version):
    v = _get_version_for_user(request.user, pk, version, Role.CONTRIBUTOR)
    form = TryForm(request.POST, request.FILES, workspace=v.model.workspace)
    if form.is_valid():
        try:
            services.request_inference(
                version=v, cluster=form.cleaned_data["cluster"], upload=form.cleaned_data["input"], user=request.user
            )
        except services.RegistrationError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, "Prediction queued.")
    else:
        for field, errors in form.errors.items():
            for e in errors:
                messages.error(request, f"{field}: {e}")
    return redirect("registry:version-detail", v.model_id, v.version)


@login_required
@require_GET
def try_status(request, pk, request_id):
    model = _get_model_for_user(request.user, pk)
    found = InferenceRequest.objects.filter(pk=request_id, version__model=model).first()
    if found is None:
        raise Http404
    return JsonResponse(
        {"id": found.pk, "status": found.status, "message": found.message, "result": found.result, "input": found.input_name}
    )


@login_required
@require_POST
def model_describe(request, pk):
    model = _get_model_for_user(request.user, pk, Role.CONTRIBUTOR)
    description = request.POST.get("description", "")
    if len(description) > 20000:
        messages.error(request, "The description is longer than 20000 characters.")
    else:
        model.description = description
        model.save(update_fields=["description", "updated_at"])
        messages.success(request, "Description saved.")
    return redirect("registry:model-detail", model.pk)


@login_required
@require_POST
def version_describe(request, pk, version):
    v = _get_version_for_user(request.user, pk, version, Role.CONTRIBUTOR)
    description = request.POST.get("description", "")
    if len(description) > 20000:
        messages.error(request, "The description is longer than 20000 characters.")
    else:
        v.description = description
        v.save(update_fields=["description"])  # the one content-free field a version may change
        messages.success(request, "Description saved.")
    return redirect("registry:version-detail", v.model_id, v.version)
