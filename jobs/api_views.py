"""Jobs REST API (/api/v1/): submit, inspect and cancel jobs, read logs, list and create clusters, upload sources.

Submission goes through the same `JobLaunchForm` as the web page, so a rule
is checked in one place. Errors are `{"error": {"code", "message", "details"}}`.
"""

import tempfile
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.datastructures import MultiValueDict

from jobs.archive_limits import archive_limits
from jobs.forms import ClusterForm, JobLaunchForm, make_source_id
from jobs.models import ComputeCluster, Environment, Job, read_log
from jobs.source_archive import py_filename, source_kind, validate_source
from jobs.views import _node_counts, _queue_depths
from tracker.api.base import ApiError, api_endpoint, api_get_run, api_get_workspace, json_response, not_found
from tracker.models import Experiment, Role

# Form field -> the name the API uses for it, so error details point at what the caller sent.
API_FIELD_NAMES = {
    "entry_script": "entry", "script_args": "params", "env_vars": "env", "pip_requirements": "pip",
    "node_count": "nodes", "max_duration_seconds": "max_duration", "use_gpu": "gpu", "example_name": "example",
    "source_kind": "source", "source_file": "source_id", "new_experiment": "experiment", "token": "idempotency_key",
}
KNOWN_KEYS = {"workspace", "experiment", "run_name", "name", "cluster", "example", "source_id", "entry", "params",
              "pip", "environment", "env", "nodes", "procs_per_node", "backend", "gpu", "max_duration", "resume_from",
              "idempotency_key"}


def _iso(value):
    return value.isoformat() if value else None


def absolute(path):
    return settings.SITE_URL.rstrip("/") + path


def job_json(job):
    run = job.run
    return {
        "id": str(run.pk),
        "run_id": str(run.pk),
        "name": run.name,
        "url": absolute(reverse("tracker:run-detail", args=[run.pk])),
        "experiment": {"id": run.experiment_id, "name": run.experiment.name},
        "status": run.status,
        "status_reason": run.status_reason,
        "cluster": job.cluster.name if job.cluster else None,
        "source": {"kind": job.source_kind, "example": job.example_name or None, "filename": job.source_filename or None},
        "entry": job.entry_script,
        "args": list(job.script_args),
        "env": dict(job.env_vars),
        "environment": job.environment.name if job.environment else None,
        "nodes": job.node_count,
        "procs_per_node": job.procs_per_node,
        "backend": job.backend,
        "gpu": job.use_gpu,
        "max_duration": job.max_duration_seconds,
        "resume_from": job.resume_from_id,
        "parent_run_id": str(run.parent_run_id) if run.parent_run_id else None,
        "stages": {
            "queued": _iso(run.queued_at), "preparing": _iso(run.preparing_at), "scaling": _iso(run.scaling_at),
            "running": _iso(run.running_at), "post_processing": _iso(run.post_processing_at), "ended": _iso(run.end_time),
        },
        "progress": run.progress_fraction,
        "eta_seconds": run.progress_eta.total_seconds() if run.progress_eta else None,
        "cancel_requested": job.cancel_requested,
        "node_status": [
            {"node_rank": n.node_rank, "status": n.status, "attempt": n.attempt, "hostname": n.hostname,
             "exit_code": n.exit_code, "reason": n.reason, "heartbeat": _iso(n.heartbeat_at)}
            for n in job.nodes.all()
        ],
    }


def cluster_json(cluster, depth=None):
    return {
        "id": cluster.pk, "name": cluster.name, "kind": cluster.kind, "queue": cluster.queue_name,
        "vm_size": cluster.vm_size, "cpus_per_node": cluster.cpus_per_node, "memory_gb_per_node": cluster.memory_gb_per_node,
        "gpus_per_node": cluster.gpus_per_node, "gpu_type": cluster.gpu_type, "min_nodes": cluster.min_nodes,
        "max_nodes": cluster.max_nodes, "idle_seconds_before_scaledown": cluster.idle_seconds_before_scaledown,
        "nodes": {"busy": getattr(cluster, "busy_count", None), "idle": getattr(cluster, "idle_count", None),
                  "unreachable": getattr(cluster, "unreachable_count", None)},
        "queue_depth": depth,
    }


def form_error(form):
    details = {}
    for field, errors in form.errors.items():
        name = "non_field" if field == "__all__" else API_FIELD_NAMES.get(field, field)
        details.setdefault(name, []).extend(str(e) for e in errors)
    first_field, first_messages = next(iter(details.items()))
    message = first_messages[0] if first_field == "non_field" else f"{first_field}: {first_messages[0]}"
    return ApiError(400, "invalid", message, details)


def _no_run_tokens(request):
    if request.api_token.is_run_token:
        raise ApiError(403, "permission_denied", "a run token cannot do this: use a personal API token")


def _text(value, field):
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ApiError(400, "invalid", f"{field} must be a string or a number")
    return str(value)


def _rows(value, field):
    """Params/env as a {name: value} object or a list of [name, value] pairs (an argv list for params)."""
    if value in (None, ""):
        return [], []
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(v, str) for v in value) and field == "params":
        from jobs.forms import argv_to_params

        pairs = argv_to_params(value)
    elif isinstance(value, list) and all(isinstance(v, list) and len(v) == 2 for v in value):
        pairs = [tuple(v) for v in value]
    else:
        raise ApiError(400, "invalid", f"{field} must be an object of name: value, or a list of [name, value] pairs")
    return [_text(n, field) for n, _ in pairs], [_text(v, field) for _, v in pairs]


def launch_form_data(body, workspace):
    """The launch form's data from a JSON body (names as documented for POST /api/v1/jobs)."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "the body must be a JSON object")
    unknown = sorted(set(body) - KNOWN_KEYS)
    if unknown:
        raise ApiError(400, "invalid", f"unknown field(s): {', '.join(unknown)}", {"unknown": unknown})
    data = MultiValueDict()
    experiment = body.get("experiment")
    if experiment in (None, ""):
        raise ApiError(400, "invalid", "experiment is required (a name or an id)", {"experiment": ["required"]})
    existing = None
    if isinstance(experiment, int) and not isinstance(experiment, bool):
        existing = Experiment.objects.filter(workspace=workspace, pk=experiment).first()
        if existing is None:
            raise ApiError(400, "invalid", f"experiment {experiment} is not in this workspace", {"experiment": ["unknown"]})
    else:
        existing = Experiment.objects.filter(workspace=workspace, name=_text(experiment, "experiment")).first()
    if existing is not None:
        data["experiment"] = str(existing.pk)
    else:
        data["new_experiment"] = _text(experiment, "experiment")
    cluster = body.get("cluster")
    if cluster in (None, ""):
        raise ApiError(400, "invalid", "cluster is required (a name or an id)", {"cluster": ["required"]})
    lookup = {"pk": cluster} if isinstance(cluster, int) and not isinstance(cluster, bool) else {"name": _text(cluster, "cluster")}
    found = ComputeCluster.objects.filter(workspace=workspace, **lookup).first()
    if found is None:
        raise ApiError(400, "invalid", f"there is no cluster {cluster!r} in this workspace", {"cluster": ["unknown"]})
    data["cluster"] = str(found.pk)
    if body.get("example") and body.get("source_id"):
        raise ApiError(400, "invalid", "give either example or source_id, not both", {"source": ["ambiguous"]})
    if body.get("example"):
        data["source_kind"], data["example_name"] = "example", _text(body["example"], "example")
    elif body.get("source_id"):
        data["source_kind"], data["source_id"] = "upload", _text(body["source_id"], "source_id")
    else:
        raise ApiError(400, "invalid", "give example (digits, transfer) or source_id from POST /api/v1/sources",
                       {"source": ["required"]})
    environment = body.get("environment")
    if environment not in (None, ""):
        env = Environment.objects.filter(workspace=workspace, name=_text(environment, "environment")).first()
        if env is None:
            raise ApiError(400, "invalid", f"there is no environment {environment!r} in this workspace", {"environment": ["unknown"]})
        data["environment"] = str(env.pk)
    pip = body.get("pip")
    if isinstance(pip, list):
        pip = "\n".join(_text(p, "pip") for p in pip)
    data["pip_requirements"] = _text(pip, "pip")
    names, values = _rows(body.get("params"), "params")
    data.setlist("script_args_name", names)
    data.setlist("script_args_value", values)
    names, values = _rows(body.get("env"), "env")
    data.setlist("env_vars_name", names)
    data.setlist("env_vars_value", values)
    for key, field in (("entry", "entry_script"), ("nodes", "node_count"), ("procs_per_node", "procs_per_node"),
                       ("backend", "backend"), ("max_duration", "max_duration_seconds"), ("resume_from", "resume_from")):
        if body.get(key) not in (None, ""):
            data[field] = _text(body[key], key)
    data.setdefault("node_count", "1")
    data.setdefault("procs_per_node", "1")
    data.setdefault("backend", "gloo")
    if body.get("gpu") not in (None, False):
        if body["gpu"] is not True:
            raise ApiError(400, "invalid", "gpu must be true or false", {"gpu": ["not a boolean"]})
        data["use_gpu"] = "on"
    data["run_name"] = _text(body.get("run_name", body.get("name")), "run_name")
    key = body.get("idempotency_key")
    data["token"] = _text(key, "idempotency_key") if key not in (None, "") else uuid.uuid4().hex
    return data


@api_endpoint(methods=("GET", "POST"))
def jobs_collection(request):
    """GET /api/v1/jobs[?workspace=&live=1&limit=]: newest jobs first. POST: submit a job; 201 with the job, or
    200 with the first one for a repeated idempotency_key."""
    if request.method == "GET":
        return _list_jobs(request)
    _no_run_tokens(request)
    body = request.json
    slug = body.get("workspace") if isinstance(body, dict) else None
    workspace = api_get_workspace(request, slug, Role.CONTRIBUTOR)
    form = JobLaunchForm(launch_form_data(body, workspace), MultiValueDict(), workspace=workspace, user=request.api_user)
    if not form.is_valid():
        raise form_error(form)
    existing = Job.objects.filter(idempotency_key=form.idempotency_key).exists()
    job = form.launch()
    if job is None:
        raise form_error(form)
    job = Job.objects.select_related("run__experiment", "cluster", "environment").get(pk=job.pk)
    return json_response(job_json(job), status=200 if existing else 201)


def _list_jobs(request):
    workspace = api_get_workspace(request, request.GET.get("workspace"))
    try:
        limit = int(request.GET.get("limit") or 50)
    except ValueError:
        raise ApiError(400, "invalid", "limit must be a whole number")
    if not 1 <= limit <= 500:
        raise ApiError(400, "invalid", "limit must be between 1 and 500")
    jobs = Job.objects.for_workspace(workspace)
    if request.api_token.is_run_token:
        jobs = jobs.filter(run_id=request.api_token.run_id)
    if request.GET.get("live") in ("1", "true"):
        jobs = jobs.live()
    jobs = jobs.select_related("run__experiment", "cluster", "environment").prefetch_related("nodes").order_by("-created_at")
    return json_response({"jobs": [job_json(job) for job in jobs[:limit]]})


def _job_for(request, run_id, min_role=Role.READER):
    run = api_get_run(request, run_id, min_role)
    job = Job.objects.select_related("run__experiment", "cluster", "environment").prefetch_related("nodes").filter(run=run).first()
    if job is None:
        raise not_found("job")
    return job


@api_endpoint(methods=("GET",))
def job_detail(request, run_id):
    """GET /api/v1/jobs/<run id>: the job's settings, stages, per-node status and progress."""
    return json_response(job_json(_job_for(request, run_id)))


@api_endpoint(methods=("POST",))
def job_cancel(request, run_id):
    """POST /api/v1/jobs/<run id>/cancel: 202 while nodes stop the processes, 409 if the run had finished."""
    from jobs.services import cancel_job

    _no_run_tokens(request)
    job = _job_for(request, run_id, Role.CONTRIBUTOR)
    if not cancel_job(job, user=request.api_user):
        raise ApiError(409, "run_ended", f"run {job.run_id} has already finished ({job.run.status})")
    job = _job_for(request, run_id, Role.CONTRIBUTOR)
    return json_response(job_json(job), status=202)


@api_endpoint(methods=("GET",))
def run_logs(request, run_id):
    """GET /api/v1/runs/<id>/logs?after=<offset>&node=&rank=&limit=: lines after the offset and the next offset."""
    run = api_get_run(request, run_id)
    params = {}
    for name in ("after", "node", "rank", "limit"):
        raw = request.GET.get(name, "")
        if raw == "":
            continue
        try:
            params[name] = int(raw)
        except ValueError:
            raise ApiError(400, "invalid", f"{name} must be a whole number")
        if params[name] < 0:
            raise ApiError(400, "invalid", f"{name} must not be negative")
    limit = min(params.get("limit", 1000), 10000) or 1
    lines, next_offset = read_log(run, after_offset=params.get("after", 0), limit=limit,
                                  node_rank=params.get("node"), rank=params.get("rank"))
    return json_response({"run_id": str(run.pk), "status": run.status, "live": run.is_live,
                          "lines": [line.as_dict() for line in lines], "next_offset": next_offset,
                          "more": len(lines) >= limit})


@api_endpoint(methods=("GET", "POST"))
def clusters_collection(request):
    """GET: the workspace's clusters with node counts and queue depth. POST (owners): create one."""
    slug = request.GET.get("workspace") or (request.json.get("workspace") if request.method == "POST" and isinstance(request.json, dict) else None)
    if request.method == "GET":
        workspace = api_get_workspace(request, slug)
        clusters = list(_node_counts(ComputeCluster.objects.filter(workspace=workspace)).order_by("name"))
        depths = _queue_depths(clusters)
        return json_response({"clusters": [cluster_json(c, depths.get(c.pk)) for c in clusters]})
    _no_run_tokens(request)
    workspace = api_get_workspace(request, slug, Role.OWNER)
    body = request.json
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "the body must be a JSON object")
    data = {k: v for k, v in body.items() if k != "workspace"}
    defaults = {"kind": "local", "cpus_per_node": 1, "memory_gb_per_node": 4, "gpus_per_node": 0, "min_nodes": 0,
                "max_nodes": 2, "idle_seconds_before_scaledown": 120}
    for key, value in defaults.items():
        data.setdefault(key, value)
    form = ClusterForm(data, workspace=workspace)
    if not form.is_valid():
        raise form_error(form)
    cluster = form.save()
    return json_response(cluster_json(cluster), status=201)


@api_endpoint(methods=("POST",), json_body=False)
def sources_collection(request):
    """POST /api/v1/sources?filename=train.zip[&workspace=slug]: raw body upload; 201 {"id", "filename", "files"}.

    The id names the stored bytes for POST /api/v1/jobs (source_id); it is
    signed, usable only by the uploader in that workspace, and expires.
    """
    from tracker import storage

    _no_run_tokens(request)
    workspace = api_get_workspace(request, request.GET.get("workspace"), Role.CONTRIBUTOR)
    filename = request.GET.get("filename") or request.headers.get("X-Filename", "")
    try:
        kind = source_kind(filename)
        if kind == "py":
            filename = py_filename(filename)
        else:
            filename = filename.replace("\\", "/").rsplit("/", 1)[-1]
    except ValidationError as exc:
        raise ApiError(400, "invalid_source", exc.messages[0])
    limit = archive_limits().max_upload_bytes
    with tempfile.SpooledTemporaryFile(max_size=2 * 1024 * 1024, dir=settings.FILE_UPLOAD_TEMP_DIR) as spool:
        size = 0
        while chunk := request.read(1024 * 1024):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too_large", f"the source is larger than the limit of {limit // (1024 * 1024)} MB")
            spool.write(chunk)
        if size == 0:
            raise ApiError(400, "invalid_source", "the body is empty: send the file's bytes")
        try:
            files = validate_source(spool, filename)
        except ValidationError as exc:
            raise ApiError(400, "invalid_source", exc.messages[0])
        spool.seek(0)
        try:
            blob = storage.save_stream(spool, kind="job-sources", max_bytes=limit)
        except storage.StorageError as exc:
            raise ApiError(507, "storage_failed", str(exc))
    return json_response(
        {"id": make_source_id(blob.key, filename, request.api_user, workspace), "filename": filename, "files": files,
         "size": blob.size, "sha256": blob.sha256},
        status=201,
    )
