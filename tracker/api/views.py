"""REST API v1: experiments, runs, params, tags, metrics, artifacts (JSON; docs/api.md).

Every view goes through `api_endpoint` (token auth, JSON bodies, JSON
errors) and reaches objects only through `api_get_run` / `api_get_workspace`:
another workspace's run is 404, a member with too low a role gets 403.
"""

import base64
import math
import uuid

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import FileResponse, StreamingHttpResponse

from tracker import metric_store, services, storage
from tracker.api.base import (
    ApiError,
    _check_role,
    api_endpoint,
    api_get_run,
    api_get_workspace,
    json_response,
    not_found,
    parse_json_body,
)
from tracker.chart_views import ChartArgsError, csv_rows, parse_chart_args
from tracker.client import wire
from tracker.models import Artifact, Experiment, MetricSeries, Role, Run, RunStatus
from tracker.views import download_content_type

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_HISTORY_PAGE = 50_000


# --- helpers -----------------------------------------------------------------


def _iso(dt):
    return dt.isoformat() if dt else None


def _float(value):
    """JSON-safe float: NaN/±Inf as their strings."""
    if value is None:
        return None
    if math.isfinite(value):
        return value
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def experiment_json(experiment):
    return {
        "id": experiment.pk,
        "name": experiment.name,
        "description": experiment.description,
        "workspace": experiment.workspace.slug,
        "tags": experiment.tags,
        "archived": experiment.archived,
        "created_at": _iso(experiment.created_at),
    }


def run_json(run, detail=False):
    data = {
        "id": str(run.id),
        "name": run.name,
        "experiment_id": run.experiment_id,
        "experiment": run.experiment.name,
        "workspace": run.experiment.workspace.slug,
        "status": run.status,
        "status_reason": run.status_reason,
        "created_by": run.created_by.username if run.created_by_id and run.created_by else None,
        "created_at": _iso(run.created_at),
        "start_time": _iso(run.start_time),
        "end_time": _iso(run.end_time),
        "parent_run_id": str(run.parent_run_id) if run.parent_run_id else None,
        "progress": {"current": run.progress_current, "total": run.progress_total},
    }
    if detail:
        data["params"] = {p.key: p.value for p in run.params.all()}
        data["tags"] = {t.key: t.value for t in run.tags.all()}
        data["metrics"] = [series_json(s) for s in run.metric_series.all()]
    return data


def series_json(series):
    return {
        "key": series.key,
        "count": series.count,
        "nonfinite_count": series.nonfinite_count,
        "last": _float(series.last) if series.count else None,
        "last_step": series.last_step,
        "last_timestamp": series.last_timestamp,
        "min": series.min_value,
        "max": series.max_value,
    }


def artifact_json(artifact):
    return {
        "path": artifact.path,
        "size": artifact.size,
        "sha256": artifact.sha256,
        "content_type": artifact.content_type,
        "created_at": _iso(artifact.created_at),
    }


def _int_arg(request, name, default, lo, hi):
    raw = request.GET.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer, got {raw!r}")
    if not lo <= value <= hi:
        raise ApiError(400, "invalid_parameter", f"{name} must be between {lo} and {hi}")
    return value


def _paginate(request, queryset, serialize):
    page = _int_arg(request, "page", 1, 1, 10**9)
    size = _int_arg(request, "page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    offset = (page - 1) * size
    rows = list(queryset[offset : offset + size + 1])
    more = len(rows) > size
    return {
        "results": [serialize(r) for r in rows[:size]],
        "page": page,
        "page_size": size,
        "next_page": page + 1 if more else None,
    }


def _no_run_token(request):
    if request.api_token.is_run_token:
        raise ApiError(403, "permission_denied", "a run token reaches only its own run")


def _body_dict(request):
    if not isinstance(request.json, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    return request.json


def _string_map(body, name):
    value = body.get(name) or {}
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_body", f"{name} must be an object of key → value")
    return value


# --- experiments ---------------------------------------------------------------


@api_endpoint(methods=("GET",))
def whoami(request):
    token = request.api_token
    return json_response(
        {"user": request.api_user.username, "token": token.name, "run_id": str(token.run_id) if token.run_id else None}
    )


@api_endpoint(methods=("GET", "POST"))
def experiments(request):
    _no_run_token(request)
    if request.method == "GET":
        workspace = api_get_workspace(request, request.GET.get("workspace"))
        qs = Experiment.objects.filter(workspace=workspace).select_related("workspace").order_by("name")
        if request.GET.get("archived") not in ("1", "true"):
            qs = qs.active()
        return json_response(_paginate(request, qs, experiment_json))
    body = _body_dict(request)
    workspace = api_get_workspace(request, body.get("workspace"), min_role=Role.CONTRIBUTOR)
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "invalid_name", "an experiment needs a name")
    if len(name.strip()) > 200:
        raise ApiError(400, "invalid_name", "experiment names are at most 200 characters")
    description = body.get("description") or ""
    if not isinstance(description, str):
        raise ApiError(400, "invalid_body", "description must be a string")
    try:
        with transaction.atomic():
            experiment = Experiment.objects.create(
                workspace=workspace, name=name.strip(), description=description, created_by=request.api_user
            )
    except IntegrityError:
        raise ApiError(409, "already_exists", f"experiment {name.strip()!r} already exists in {workspace.slug}")
    return json_response(experiment_json(experiment), status=201)


def _get_experiment(request, pk, min_role=Role.READER):
    experiment = Experiment.objects.select_related("workspace").filter(pk=pk).first()
    if experiment is None:
        raise not_found("experiment")
    _check_role(request, experiment.workspace, min_role)
    return experiment


@api_endpoint(methods=("GET",))
def experiment_detail(request, pk):
    _no_run_token(request)
    return json_response(experiment_json(_get_experiment(request, pk)))


# --- runs ------------------------------------------------------------------------


def _experiment_for_new_run(request, body):
    if body.get("experiment_id") is not None:
        pk = body["experiment_id"]
        if isinstance(pk, bool) or not isinstance(pk, int):
            raise ApiError(400, "invalid_body", "experiment_id must be an integer")
        return _get_experiment(request, pk, min_role=Role.CONTRIBUTOR)
    name = body.get("experiment")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "invalid_body", "give experiment_id or experiment (a name)")
    if len(name.strip()) > 200:
        raise ApiError(400, "invalid_name", "experiment names are at most 200 characters")
    workspace = api_get_workspace(request, body.get("workspace"), min_role=Role.CONTRIBUTOR)
    experiment, _ = Experiment.objects.get_or_create(
        workspace=workspace, name=name.strip(), defaults={"created_by": request.api_user}
    )
    return experiment


@api_endpoint(methods=("GET", "POST"))
def runs(request):
    _no_run_token(request)
    if request.method == "GET":
        return _search_runs(request)
    body = _body_dict(request)
    status = body.get("status", RunStatus.RUNNING)
    name = body.get("name") or ""
    if not isinstance(name, str):
        raise ApiError(400, "invalid_body", "name must be a string")
    parent = None
    run_id = _client_run_id(body)
    if run_id is not None:
        existing = Run.objects.select_related("experiment__workspace", "created_by").filter(pk=run_id).first()
        if existing is not None:
            # A client retrying (or replaying its spool) a creation it made before: same answer, nothing new.
            try:
                _check_role(request, existing.experiment.workspace, Role.CONTRIBUTOR)
            except ApiError:
                raise ApiError(409, "id_taken", "a run with this id exists")
            if existing.created_by_id != request.api_user.pk:
                raise ApiError(409, "id_taken", "a run with this id exists")
            return json_response(run_json(existing), status=200)
    with transaction.atomic():
        experiment = _experiment_for_new_run(request, body)
        if body.get("parent_run_id"):
            parent = api_get_run(request, body["parent_run_id"])
            if parent.experiment.workspace_id != experiment.workspace_id:
                raise not_found("parent run")
        try:
            run = services.create_run(
                experiment=experiment,
                user=request.api_user,
                name=name,
                params=_string_map(body, "params"),
                tags=_string_map(body, "tags"),
                status=status,
                parent_run=parent,
                source_note=str(body.get("source_note") or ""),
                run_id=run_id,
            )
        except services.InvalidInput as exc:
            raise ApiError(400, exc.code, str(exc), details=exc.errors or None)
    run = Run.objects.select_related("experiment__workspace", "created_by").get(pk=run.pk)
    return json_response(run_json(run, detail=True), status=201)


def _client_run_id(body):
    raw = body.get("id")
    if raw is None:
        return None
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise ApiError(400, "invalid_body", "id must be a UUID")


def _search_runs(request):
    from tracker.run_filter import FilterError, apply_filter

    workspace = api_get_workspace(request, request.GET.get("workspace"))
    qs = Run.objects.for_workspace(workspace).select_related("experiment__workspace", "created_by")
    experiment_ids = request.GET.getlist("experiment_id")
    if experiment_ids:
        try:
            qs = qs.filter(experiment_id__in=[int(x) for x in experiment_ids])
        except ValueError:
            raise ApiError(400, "invalid_parameter", "experiment_id must be an integer")
    text = request.GET.get("filter", "").strip()
    if text:
        try:
            qs = apply_filter(qs, text)
        except FilterError as exc:
            raise ApiError(400, "invalid_filter", str(exc))
    order = request.GET.get("order_by", "-created_at")
    allowed = {"created_at", "-created_at", "name", "-name", "status", "-status", "start_time", "-start_time"}
    if order not in allowed:
        raise ApiError(400, "invalid_parameter", f"order_by must be one of {', '.join(sorted(allowed))}")
    qs = qs.order_by(order, "id")
    return json_response(_paginate(request, qs, run_json))


@api_endpoint(methods=("GET", "PATCH", "POST"))
def run_detail(request, run_id):
    if request.method == "GET":
        run = api_get_run(request, run_id)
        run = (
            Run.objects.select_related("experiment__workspace", "created_by")
            .prefetch_related("params", "tags", "metric_series")
            .get(pk=run.pk)
        )
        return json_response(run_json(run, detail=True))
    run = api_get_run(request, run_id, min_role=Role.CONTRIBUTOR)
    body = _body_dict(request)
    unknown = set(body) - {"name", "status", "reason", "end"}
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown fields: {', '.join(sorted(unknown))}")
    status = body.get("status")
    if body.get("end") and status is None:
        status = RunStatus.COMPLETED
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "invalid_body", "name must be a string")
    reason = body.get("reason") or ""
    if not isinstance(reason, str):
        raise ApiError(400, "invalid_body", "reason must be a string")
    try:
        services.update_run(run, name=name, status=status, reason=reason)
    except services.InvalidInput as exc:
        raise ApiError(409 if exc.code == "run_ended" else 400, exc.code, str(exc))
    run = Run.objects.select_related("experiment__workspace", "created_by").get(pk=run.pk)
    return json_response(run_json(run))


@api_endpoint(methods=("POST",))
def run_params(request, run_id):
    run = api_get_run(request, run_id, min_role=Role.CONTRIBUTOR)
    params = _string_map(_body_dict(request), "params")
    errors = services.log_params(run, params)
    return json_response({"stored": len(params) - len(errors), "errors": errors})


@api_endpoint(methods=("POST",))
def run_tags(request, run_id):
    run = api_get_run(request, run_id, min_role=Role.CONTRIBUTOR)
    tags = _string_map(_body_dict(request), "tags")
    errors = services.set_tags(run, tags)
    return json_response({"stored": len(tags) - len(errors), "errors": errors})


@api_endpoint(methods=("POST",))
def run_progress(request, run_id):
    run = api_get_run(request, run_id, min_role=Role.CONTRIBUTOR)
    body = _body_dict(request)
    current, total = body.get("current"), body.get("total")
    for name, value in (("current", current), ("total", total)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise ApiError(400, "invalid_body", f"{name} must be a finite number")
    if current is None:
        raise ApiError(400, "invalid_body", "current is required")
    run.set_progress(float(current), float(total) if total is not None else None)
    return json_response({"current": run.progress_current, "total": run.progress_total})


# --- metrics ---------------------------------------------------------------------


@api_endpoint(methods=("GET", "POST"), json_body=False)
def run_metrics(request, run_id):
    if request.method == "GET":
        run = api_get_run(request, run_id)
        return json_response({"metrics": [series_json(s) for s in MetricSeries.objects.filter(run=run)]})
    run = api_get_run(request, run_id, min_role=Role.CONTRIBUTOR)
    try:
        if request.content_type == wire.CONTENT_TYPE:
            result = _ingest_packed(request, run)
        else:
            result = _ingest_json(request, run)
    except metric_store.BatchTooLarge as exc:
        raise ApiError(413, "batch_too_large", str(exc))
    return json_response({"stored": result.stored, "errors": result.errors, "duplicate": result.duplicate})


def _valid_idempotency_key(key):
    if key is not None and (not isinstance(key, str) or not key or len(key) > 200):
        raise ApiError(400, "invalid_body", "idempotency_key must be a string of 1 to 200 characters")
    return key


def _ingest_json(request, run):
    request.json = parse_json_body(request)
    body = _body_dict(request)
    points = body.get("points")
    if not isinstance(points, list):
        raise ApiError(400, "invalid_body", "points must be a list of {key, value, step, timestamp, epoch}")
    key = _valid_idempotency_key(body.get("idempotency_key"))
    return metric_store.ingest(run, points, idempotency_key=key)


def _ingest_packed(request, run):
    """The packed body (tracker.client.wire): arrays decoded without a per-point parse, key in a header."""
    key = _valid_idempotency_key(request.headers.get("Idempotency-Key"))
    try:
        packed = wire.decode_points(request.body, max_points=metric_store.MAX_POINTS_PER_BATCH)
    except wire.TooManyPoints as exc:
        raise metric_store.BatchTooLarge(str(exc)) from None
    except wire.WireFormatError as exc:
        raise ApiError(400, "invalid_body", f"the packed body is malformed: {exc}") from None
    return metric_store.ingest_packed(run, packed, idempotency_key=key)


def _encode_token(step, pk):
    return base64.urlsafe_b64encode(f"{step}:{pk}".encode()).decode()


def _decode_token(token):
    try:
        step, pk = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        return int(step), int(pk)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_parameter", "page_token is not a token this API gave out")


@api_endpoint(methods=("GET",))
def metric_history(request, run_id, key):
    run = api_get_run(request, run_id)
    series = metric_store.get_series(run, key)
    if series is None:
        raise not_found("metric")
    size = _int_arg(request, "max_results", 10_000, 1, MAX_HISTORY_PAGE)
    start = _int_arg(request, "start_step", None, 0, metric_store.MAX_STEP)
    end = _int_arg(request, "end_step", None, 0, metric_store.MAX_STEP)
    after = _decode_token(request.GET["page_token"]) if request.GET.get("page_token") else None
    rows = list(metric_store.iter_points(series.pk, start, end, limit=size + 1, after=after, with_id=True))
    more = len(rows) > size
    rows = rows[:size]
    points = [
        {"step": step, "value": _float(value), "timestamp": ts, "epoch": epoch} for _pk, step, value, ts, epoch in rows
    ]
    token = _encode_token(rows[-1][1], rows[-1][0]) if more else None
    return json_response({"key": key, "points": points, "next_page_token": token})


@api_endpoint(methods=("GET",))
def metric_chart(request, run_id, key):
    run = api_get_run(request, run_id)
    try:
        args = parse_chart_args(request.GET)
    except ChartArgsError as exc:
        raise ApiError(400, "invalid_parameter", str(exc))
    series = metric_store.get_series(run, key)
    if series is None:
        raise not_found("metric")
    data = metric_store.chart_data(series, **args)
    data["live"] = run.is_live
    return json_response(data)


@api_endpoint(methods=("GET",))
def metric_csv(request, run_id, key):
    run = api_get_run(request, run_id)
    series = metric_store.get_series(run, key)
    if series is None:
        raise not_found("metric")
    response = StreamingHttpResponse(csv_rows(series), content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="metric.csv"'
    return response


# --- artifacts -------------------------------------------------------------------


@api_endpoint(methods=("GET",))
def run_artifacts(request, run_id):
    run = api_get_run(request, run_id)
    prefix = request.GET.get("prefix", "")
    qs = Artifact.objects.filter(run=run)
    if prefix:
        qs = qs.filter(path__startswith=prefix)
    return json_response(_paginate(request, qs.order_by("path"), artifact_json))


@api_endpoint(methods=("GET", "PUT"), json_body=False)
def artifact(request, run_id, path):
    if request.method == "GET":
        run = api_get_run(request, run_id)
        found = Artifact.objects.filter(run=run, path=path).first()
        if found is None:
            raise not_found("artifact")
        response = FileResponse(storage.open_blob(found.storage_key), as_attachment=True, filename=found.name)
        # Never echo a stored text/html or image/svg+xml: the same rule as page downloads.
        response["Content-Type"] = download_content_type(found)
        response["X-Content-SHA256"] = found.sha256
        return response
    run = api_get_run(request, run_id, min_role=Role.CONTRIBUTOR)
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        length = 0
    if length > settings.MAX_UPLOAD_BYTES:
        raise ApiError(413, "too_large", f"artifacts are at most {settings.MAX_UPLOAD_BYTES} bytes")
    try:
        stored = services.store_artifact(
            run, path, request, max_bytes=settings.MAX_UPLOAD_BYTES, content_type=request.GET.get("content_type", "")
        )
    except services.InvalidArtifactPath as exc:
        raise ApiError(400, "invalid_path", str(exc))
    except storage.TooLarge as exc:
        raise ApiError(413, "too_large", str(exc))
    except storage.StorageError as exc:
        raise ApiError(507, "storage_error", str(exc))
    return json_response(artifact_json(stored), status=201)
