"""Tracking pages: workspace home, experiments, runs, artifacts, compare.

Every view fetches its object through tracker.access (404 for non-members,
403 for a role too low) and issues a constant number of queries.
"""

import csv
import html
import io
import itertools
import json
import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Prefetch, Q
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from tracker import services, storage
from tracker.access import (
    default_workspace_for,
    get_experiment_for_user,
    get_run_for_user,
    get_workspace_for_user,
    require_role,
)
from tracker.forms import ExperimentForm, RunTagForm
from tracker.models import Artifact, Experiment, MetricSeries, Param, Role, Run, RunTag, Workspace
from tracker.run_filter import FilterError
from tracker.runs_table import RunsTable, experiment_keys
from tracker.templatetags.tracker_tags import duration as format_duration
from tracker.templatetags.tracker_tags import metric as format_metric

MAX_COMPARE = 20

# Artifact previews: what the browser shows inline, never more than PREVIEW_BYTES read.
PREVIEW_BYTES = 64 * 1024
CSV_PREVIEW_ROWS = 50
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp"}
TEXT_EXTENSIONS = {
    ".txt", ".log", ".out", ".err", ".md", ".rst", ".py", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf",
    ".sh", ".json", ".jsonl", ".csv", ".tsv", ".xml", ".ipynb", ".env", ".requirements", ".lock", ".diff", ".patch",
}
# Never rendered by the browser as a document of ours: always a download.
ACTIVE_EXTENSIONS = {".html", ".htm", ".svg", ".svgz", ".xhtml", ".xml", ".js", ".mjs", ".pdf"}


def _extension(artifact):
    name = artifact.name.lower()
    return name[name.rfind("."):] if "." in name else ""


def open_artifact(artifact):
    return storage.open_blob(artifact.storage_key)


def image_content_type(artifact):
    return IMAGE_TYPES.get(_extension(artifact))


def download_content_type(artifact):
    ext = _extension(artifact)
    if ext in IMAGE_TYPES:
        return IMAGE_TYPES[ext]
    if ext in TEXT_EXTENSIONS and ext not in ACTIVE_EXTENSIONS:
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def _read_head(artifact):
    with open_artifact(artifact) as blob:
        return blob.read(PREVIEW_BYTES)


def artifact_preview(artifact):
    """{"kind": image|json|csv|text|download, ...} for the artifact browser; reads at most 64 KB."""
    ext = _extension(artifact)
    if ext in IMAGE_TYPES:
        return {"kind": "image"}
    if ext in ACTIVE_EXTENSIONS:
        return {"kind": "download", "reason": "This file type is never shown inline; download it to open it."}
    if ext not in TEXT_EXTENSIONS and not (artifact.content_type or "").startswith("text/") and "." in artifact.name:
        return {"kind": "download", "reason": "No preview for this file type."}
    try:
        head = _read_head(artifact)
    except (FileNotFoundError, storage.StorageError):
        return {"kind": "download", "reason": "The stored file is missing."}
    if b"\x00" in head:
        return {"kind": "download", "reason": "Binary file: no preview."}
    truncated = artifact.size > len(head)
    text = head.decode("utf-8", errors="replace")
    if truncated and "\n" in text:
        text = text[: text.rfind("\n") + 1]  # never show half a line
    if ext == ".json" and not truncated:
        try:
            return {"kind": "json", "text": json.dumps(json.loads(text), indent=2, ensure_ascii=False)}
        except ValueError as exc:
            return {"kind": "text", "text": text, "note": f"Not valid JSON ({exc}); shown as text."}
    if ext in (".csv", ".tsv"):
        rows = list(itertools.islice(csv.reader(io.StringIO(text), delimiter="\t" if ext == ".tsv" else ","),
                                     CSV_PREVIEW_ROWS + 1))
        if rows:
            header, body = rows[0], rows[1:]
            return {"kind": "csv", "header": header, "rows": body, "more": truncated or len(rows) > CSV_PREVIEW_ROWS}
    return {"kind": "text", "text": text, "truncated": truncated}


def artifact_tree(artifacts, selected=None):
    """Flatten logical paths into rows for a folder tree: {"depth", "name", "is_dir", "artifact", "path"}."""
    rows = []
    seen_dirs = set()
    for artifact in artifacts:
        parts = artifact.path.split("/")
        for depth, name in enumerate(parts[:-1]):
            folder = "/".join(parts[: depth + 1])
            if folder not in seen_dirs:
                seen_dirs.add(folder)
                rows.append({"depth": depth, "name": name, "is_dir": True, "path": folder, "indent": depth * 18})
        rows.append({
            "depth": len(parts) - 1, "name": parts[-1], "is_dir": False, "artifact": artifact, "path": artifact.path,
            "indent": (len(parts) - 1) * 18, "selected": selected is not None and artifact.pk == selected.pk,
        })
    return rows


def _role(user, workspace):
    """The user's role (the caller already checked membership)."""
    return require_role(user, workspace).role


def _can_edit(membership_role):
    return membership_role in (Role.CONTRIBUTOR, Role.OWNER)


def _series_json(runs, key):
    return json.dumps(
        [
            {
                "label": run.display_name,
                "url": reverse("tracker:metric-chart", args=[run.id, key]),
                "live": run.is_live,
            }
            for run in runs
        ]
    )


@login_required
def home(request):
    workspace = default_workspace_for(request.user)
    if workspace is None:
        return render(request, "tracker/no_workspace.html")
    return redirect("tracker:workspace-home", slug=workspace.slug)


@login_required
def workspace_home(request, slug):
    workspace = get_workspace_for_user(request.user, slug)
    recent_runs = list(
        Run.objects.for_workspace(workspace).select_related("experiment", "created_by").order_by("-created_at")[:12]
    )
    counts = Experiment.objects.filter(workspace=workspace).aggregate(
        total=Count("pk"), active=Count("pk", filter=Q(archived=False))
    )
    experiments = list(Experiment.objects.filter(workspace=workspace, archived=False).order_by("-updated_at")[:6])
    return render(
        request,
        "tracker/workspace_home.html",
        {
            "workspace": workspace,
            "recent_runs": recent_runs,
            "experiment_counts": counts,
            "recent_experiments": experiments,
            "can_edit": _can_edit(_role(request.user, workspace)),
        },
    )


@login_required
def experiment_list(request, slug):
    workspace = get_workspace_for_user(request.user, slug)
    show_archived = request.GET.get("archived") == "1"
    search = (request.GET.get("q") or "").strip()[:200]
    experiments = Experiment.objects.filter(workspace=workspace).select_related("created_by")
    if not show_archived:
        experiments = experiments.filter(archived=False)
    if search:
        experiments = experiments.filter(Q(name__icontains=search) | Q(description__icontains=search))
    experiments = experiments.annotate(run_count=Count("runs")).order_by("archived", "-created_at")
    return render(
        request,
        "tracker/experiment_list.html",
        {
            "workspace": workspace,
            "experiments": experiments,
            "show_archived": show_archived,
            "search": search,
            "can_edit": _can_edit(_role(request.user, workspace)),
        },
    )


@login_required
def experiment_create(request, slug):
    workspace = get_workspace_for_user(request.user, slug, Role.CONTRIBUTOR)
    form = ExperimentForm(request.POST or None, workspace=workspace)
    if request.method == "POST" and form.is_valid():
        experiment = form.save(commit=False)
        experiment.created_by = request.user
        experiment.save()
        messages.success(request, f"Created experiment “{experiment.name}”.")
        return redirect("tracker:experiment-detail", pk=experiment.pk)
    return render(request, "tracker/experiment_form.html", {"workspace": workspace, "form": form, "creating": True})


@login_required
def experiment_edit(request, pk):
    experiment = get_experiment_for_user(request.user, pk, Role.CONTRIBUTOR)
    form = ExperimentForm(request.POST or None, instance=experiment, workspace=experiment.workspace)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, "Saved.")
        return redirect("tracker:experiment-detail", pk=experiment.pk)
    return render(
        request,
        "tracker/experiment_form.html",
        {"workspace": experiment.workspace, "experiment": experiment, "form": form, "creating": False},
    )


@login_required
@require_POST
def experiment_archive(request, pk):
    experiment = get_experiment_for_user(request.user, pk, Role.CONTRIBUTOR)
    experiment.archive()
    messages.success(request, f"Archived “{experiment.name}”.")
    return redirect("tracker:experiment-list", slug=experiment.workspace.slug)


@login_required
@require_POST
def experiment_unarchive(request, pk):
    experiment = get_experiment_for_user(request.user, pk, Role.CONTRIBUTOR)
    experiment.unarchive()
    messages.success(request, f"Restored “{experiment.name}”.")
    return redirect("tracker:experiment-detail", pk=experiment.pk)


@login_required
def experiment_detail(request, pk):
    experiment = get_experiment_for_user(request.user, pk)
    workspace = experiment.workspace
    param_keys, metric_keys = experiment_keys(experiment)
    table = RunsTable.from_request(
        experiment, request.GET, default_metrics=metric_keys[:3], default_params=param_keys[:2]
    )
    filter_error = None
    try:
        page = table.page(request.GET.get("page"))
    except FilterError as exc:
        filter_error = str(exc)
        table.filter_text_rejected = table.filter_text
        table.filter_text = ""
        page = table.page(1)
    return render(
        request,
        "tracker/experiment_detail.html",
        {
            "workspace": workspace,
            "experiment": experiment,
            "table": table,
            "page": page,
            "rows": _table_rows(page.object_list),
            "param_keys": param_keys,
            "metric_keys": metric_keys,
            "filter_error": filter_error,
            "filter_text": request.GET.get("filter", ""),
            "statuses": Run._meta.get_field("status").choices,
            "can_edit": _can_edit(_role(request.user, workspace)),
        },
        status=400 if filter_error else 200,
    )


def _table_rows(runs):
    """The runs table's rows as HTML, built in Python: 50 rows x N columns cost ~30 ms a page as template
    work and ~20 ms through format_html; every value goes through html.escape."""
    return [_row_html(run) for run in runs]


def _row_html(run):
    e = html.escape  # the same five characters as django.utils.html.escape, without its lazy-string wrapper
    fraction = run.progress_fraction if run.is_live else None
    progress = ""
    if fraction is not None:
        percent = f"{fraction * 100:.0f}"
        progress = f' <span class="progress inline-progress" title="{percent}%"><span style="width: {percent}%"></span></span>'
    cells = "".join(
        f'<td class="num">{e(format_metric(value))}</td>' if column.kind == "metric"
        else f"<td>{e('—' if value is None else (value if len(value) <= 60 else value[:59] + '…'))}</td>"
        for column, value in run.column_values
    )
    run_id = str(run.id)
    name = e(run.display_name)
    user = e(run.created_by.username) if run.created_by else "—"
    created = timezone.localtime(run.created_at).strftime("%Y-%m-%d %H:%M")
    # Safe: every interpolated value is escaped above, or a number or date format of our own.
    return mark_safe(
        f'<tr>\n        <td class="select"><input type="checkbox" name="run" value="{run_id}" aria-label="Select {name}"></td>\n'
        f'        <td><a href="{e(reverse("tracker:run-detail", args=[run.id]))}">{name}</a></td>\n'
        f'        <td><span class="status status-{e(run.status)}">{e(run.get_status_display())}</span>{progress}</td>\n'
        f"        <td>{e(format_duration(run.duration))}</td>\n        <td>{user}</td>\n        <td>{created}</td>\n"
        f"        {cells}\n      </tr>"
    )


@login_required
def run_detail(request, run_id):
    run = get_run_for_user(request.user, run_id)
    workspace = run.experiment.workspace
    series = list(MetricSeries.objects.filter(run=run).order_by("key"))
    charts = [{"key": s.key, "series": s, "series_json": _series_json([run], s.key)} for s in series]
    artifacts = list(Artifact.objects.filter(run=run).order_by("path"))
    return render(
        request,
        "tracker/run_detail.html",
        {
            "workspace": workspace,
            "experiment": run.experiment,
            "run": run,
            "params": list(Param.objects.filter(run=run).order_by("key")),
            # mlflow.torchlight.* tags are the MLflow layer's bookkeeping (logged-model records), not user tags.
            "tags": list(RunTag.objects.filter(run=run).exclude(key__startswith="mlflow.torchlight.").order_by("key")),
            "charts": charts,
            "children": list(Run.objects.filter(parent_run=run).order_by("created_at")[:100]),
            "artifact_tree": artifact_tree(artifacts),
            "artifact_count": len(artifacts),
            "tag_form": RunTagForm(),
            "can_edit": _can_edit(_role(request.user, workspace)),
        },
    )


@login_required
@require_POST
def run_tag_set(request, run_id):
    run = get_run_for_user(request.user, run_id, Role.CONTRIBUTOR)
    form = RunTagForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            for error in errors:
                messages.error(request, f"Tag not saved: {error}")
        return redirect(reverse("tracker:run-detail", args=[run.id]) + "#tags")
    errors = services.set_tags(run, {form.cleaned_data["key"]: form.cleaned_data["value"]})
    for error in errors:
        messages.error(request, f"Tag not saved: {error['message']}.")
    if not errors:
        messages.success(request, f"Tag “{form.cleaned_data['key']}” saved.")
    return redirect(reverse("tracker:run-detail", args=[run.id]) + "#tags")


@login_required
@require_POST
def run_tag_delete(request, run_id):
    run = get_run_for_user(request.user, run_id, Role.CONTRIBUTOR)
    key = request.POST.get("key", "")
    if services.delete_tag(run, key):
        messages.success(request, f"Tag “{key}” deleted.")
    else:
        messages.error(request, f"There is no tag “{key}” on this run.")
    return redirect(reverse("tracker:run-detail", args=[run.id]) + "#tags")


@login_required
def run_artifacts(request, run_id):
    run = get_run_for_user(request.user, run_id)
    artifacts = list(Artifact.objects.filter(run=run).order_by("path"))
    selected = None
    preview = None
    wanted = request.GET.get("path")
    if wanted is not None:
        selected = next((a for a in artifacts if a.path == wanted), None)
        if selected is None:
            raise Http404
        preview = artifact_preview(selected)
    return render(
        request,
        "tracker/run_artifacts.html",
        {
            "workspace": run.experiment.workspace,
            "experiment": run.experiment,
            "run": run,
            "artifact_tree": artifact_tree(artifacts, selected=selected),
            "artifact_count": len(artifacts),
            "selected": selected,
            "preview": preview,
        },
    )


def _artifact_for(request, run_id, artifact_id):
    run = get_run_for_user(request.user, run_id)
    artifact = Artifact.objects.filter(run=run, pk=artifact_id).first()
    if artifact is None:
        raise Http404
    return artifact


def _blob_or_404(artifact):
    try:
        return open_artifact(artifact)
    except FileNotFoundError:
        raise Http404


@login_required
def artifact_download(request, run_id, artifact_id):
    artifact = _artifact_for(request, run_id, artifact_id)
    response = FileResponse(
        _blob_or_404(artifact),
        as_attachment=True,
        filename=artifact.name,
        content_type=download_content_type(artifact),
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Length"] = str(artifact.size)
    return response


@login_required
def artifact_raw(request, run_id, artifact_id):
    """Image bytes for an <img> preview; nothing but the image types is ever served inline."""
    artifact = _artifact_for(request, run_id, artifact_id)
    content_type = image_content_type(artifact)
    if content_type is None:
        raise Http404
    response = FileResponse(_blob_or_404(artifact), content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Content-Disposition"] = "inline"
    return response


def _compare_ids(text):
    ids = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = uuid.UUID(part)
        except ValueError:
            raise Http404
        if value not in ids:
            ids.append(value)
    return ids


def _parcoords_data(runs, params_by_run, metric_keys, last_by_run):
    param_keys = sorted({key for params in params_by_run.values() for key in params})
    return {
        "runs": [{"id": str(run.id), "name": run.display_name} for run in runs],
        "params": {key: [params_by_run[run.id].get(key) for run in runs] for key in param_keys},
        "metrics": {key: [last_by_run[run.id].get(key) for run in runs] for key in metric_keys},
    }


@login_required
def compare(request):
    ids = _compare_ids(request.GET.get("runs") or ",".join(request.GET.getlist("run")))
    if len(ids) < 2 or len(ids) > MAX_COMPARE:
        return render(
            request,
            "tracker/compare.html",
            {"error": f"Choose between 2 and {MAX_COMPARE} runs to compare (got {len(ids)})."},
            status=400,
        )
    member_of = Workspace.objects.for_user(request.user)
    runs_by_id = {
        run.id: run
        for run in Run.objects.filter(pk__in=ids, experiment__workspace__in=member_of)
        .select_related("experiment__workspace", "created_by")
        .prefetch_related(
            Prefetch("params", queryset=Param.objects.order_by("key")),
            Prefetch("metric_series", queryset=MetricSeries.objects.order_by("key")),
        )
    }
    if len(runs_by_id) != len(ids):
        raise Http404
    runs = [runs_by_id[i] for i in ids]
    params_by_run = {run.id: {p.key: p.value for p in run.params.all()} for run in runs}
    last_by_run = {run.id: {s.key: s.last_value for s in run.metric_series.all()} for run in runs}
    param_keys = sorted({key for params in params_by_run.values() for key in params})
    param_rows = []
    for key in param_keys:
        values = [params_by_run[run.id].get(key) for run in runs]
        param_rows.append({"key": key, "values": values, "differs": len(set(values)) > 1})
    metric_keys = sorted({key for series in last_by_run.values() for key in series})
    metric_rows = [{"key": key, "values": [last_by_run[run.id].get(key) for run in runs]} for key in metric_keys]
    charts = [{"key": key, "series_json": _series_json(runs, key)} for key in metric_keys]
    workspaces = {run.experiment.workspace for run in runs}
    return render(
        request,
        "tracker/compare.html",
        {
            "runs": runs,
            "workspace": next(iter(workspaces)) if len(workspaces) == 1 else None,
            "param_rows": param_rows,
            "metric_rows": metric_rows,
            "metric_keys": metric_keys,
            "charts": charts,
            "parcoords": _parcoords_data(runs, params_by_run, metric_keys, last_by_run),
            "differing_count": sum(1 for row in param_rows if row["differs"]),
        },
    )


def page_not_found(request, exception=None):
    return render(request, "404.html", status=404)


