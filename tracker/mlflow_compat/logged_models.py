"""MLflow 3 logged models (`mlflow.<flavour>.log_model`), kept as ordinary Torchlight data.

A logged model belongs to a run: its source run, or, when it was logged
outside a run, a completed run made to hold it (named after the model). Its
record (name, status, tags, params) is a hidden tag of that run,
`mlflow.torchlight.model.<model id>`, and its files are the run's artifacts
under `models/<model id>/`, so they are browsable on the run page and
registrable like any other artifact folder.
"""

import json
import re
import time
import uuid

from django.db import transaction

from tracker import services, storage
from tracker.mlflow_compat import conf
from tracker.mlflow_compat.api import mlflow_endpoint
from tracker.mlflow_compat.errors import invalid, not_found
from tracker.mlflow_compat.serializers import HIDDEN_TAG_PREFIX, experiment_id, run_artifact_uri
from tracker.mlflow_compat.views import decode_token, encode_token, get_experiment, get_run, ok
from tracker.models import Artifact, RunStatus, RunTag

RECORD_PREFIX = HIDDEN_TAG_PREFIX + "model."
HOLDER_TAG = HIDDEN_TAG_PREFIX + "modelHolder"
MODEL_ID_RE = re.compile(r"^m-[0-9a-f]{32}$")
STATUSES = {
    "LOGGED_MODEL_STATUS_UNSPECIFIED": 0,
    "LOGGED_MODEL_PENDING": 1,
    "LOGGED_MODEL_READY": 2,
    "LOGGED_MODEL_UPLOAD_FAILED": 3,
}
STATUS_NAMES = {v: k for k, v in STATUSES.items()}


def artifact_prefix(model_id):
    return f"models/{model_id}"


def now_ms():
    return int(time.time() * 1000)


def parse_status(raw):
    if isinstance(raw, int) and raw in STATUS_NAMES:
        return STATUS_NAMES[raw]
    if isinstance(raw, str) and raw.upper() in STATUSES:
        return raw.upper()
    if isinstance(raw, str) and raw.isdigit() and int(raw) in STATUS_NAMES:
        return STATUS_NAMES[int(raw)]
    raise invalid(f"unknown logged model status {raw!r}; one of {', '.join(STATUSES)}")


def load(ctx, model_id, write=False):
    """(record dict, holder run) of a logged model the caller may reach; RESOURCE_DOES_NOT_EXIST otherwise."""
    if not isinstance(model_id, str) or not MODEL_ID_RE.match(model_id):
        raise not_found(f"Logged model with ID '{model_id}' not found.")
    tag = RunTag.objects.select_related("run__experiment__workspace", "run__created_by").filter(key=RECORD_PREFIX + model_id).first()
    if tag is None:
        raise not_found(f"Logged model with ID '{model_id}' not found.")
    run = tag.run
    if run.experiment.workspace_id not in ctx.roles:
        raise not_found(f"Logged model with ID '{model_id}' not found.")
    ctx.check(run.experiment.workspace_id, write)
    return json.loads(tag.value), run


def save(record, run):
    record["last_updated_timestamp_ms"] = now_ms()
    RunTag.objects.update_or_create(run=run, key=RECORD_PREFIX + record["model_id"], defaults={"value": json.dumps(record)})


def model_json(record, run, workspace):
    info = {
        "model_id": record["model_id"],
        "experiment_id": experiment_id(run.experiment, workspace),
        "name": record["name"],
        "creation_timestamp_ms": record["creation_timestamp_ms"],
        "last_updated_timestamp_ms": record["last_updated_timestamp_ms"],
        "artifact_uri": f"{run_artifact_uri(run, workspace)}/{artifact_prefix(record['model_id'])}",
        "status": record["status"],
        "status_message": record.get("status_message", ""),
        "model_type": record.get("model_type", ""),
        "source_run_id": record.get("source_run_id", ""),
        "tags": [{"key": k, "value": v} for k, v in sorted(record.get("tags", {}).items())],
    }
    return {
        "info": info,
        "data": {"params": [{"key": k, "value": v} for k, v in sorted(record.get("params", {}).items())], "metrics": []},
    }


def _pairs(items, what):
    result = {}
    for item in items or []:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"].strip():
            raise invalid(f"each {what} is an object with a non-empty 'key' and a 'value'")
        result[item["key"]] = "" if item.get("value") is None else str(item["value"])
    return result


@mlflow_endpoint(methods=("POST",))
def create(request):
    ctx = request.mlflow
    params = request.params
    experiment = get_experiment(ctx, params.str("experiment_id") or "0", write=True)
    source_run_id = params.str("source_run_id")
    source_run = get_run(ctx, source_run_id, write=True) if source_run_id else None
    if source_run is not None and source_run.experiment_id != experiment.pk:
        raise invalid(f"run {source_run_id} is not in experiment {params.str('experiment_id')}")
    model_id = f"m-{uuid.uuid4().hex}"
    name = params.str("name").strip() or f"model-{model_id[2:10]}"
    if len(name) > 250:
        raise invalid("logged model names are at most 250 characters")
    record = {
        "model_id": model_id,
        "name": name,
        "creation_timestamp_ms": now_ms(),
        "last_updated_timestamp_ms": now_ms(),
        "status": "LOGGED_MODEL_PENDING",
        "status_message": "",
        "model_type": params.str("model_type"),
        "source_run_id": source_run.id.hex if source_run else "",
        "tags": _pairs(params.list("tags"), "tag"),
        "params": _pairs(params.list("params"), "param"),
        "creator": ctx.user.username,
    }
    with transaction.atomic():
        run = source_run
        if run is None:
            ctx.require_personal("log a model outside its run")
            try:
                run = services.create_run(experiment=experiment, user=ctx.user, name=name, tags={HOLDER_TAG: model_id})
            except services.InvalidInput as exc:
                raise invalid(str(exc)) from None
            run.finish(RunStatus.COMPLETED)
            run.experiment = experiment
        save(record, run)
    return ok({"model": model_json(record, run, ctx.workspace)})


@mlflow_endpoint(methods=("GET", "PATCH", "DELETE"))
def detail(request, model_id):
    ctx = request.mlflow
    if request.method == "GET":
        record, run = load(ctx, model_id)
        return ok({"model": model_json(record, run, ctx.workspace)})
    record, run = load(ctx, model_id, write=True)
    if request.method == "DELETE":
        with transaction.atomic():
            keys = list(Artifact.objects.filter(run=run, path__startswith=artifact_prefix(model_id) + "/").values_list("storage_key", flat=True))
            Artifact.objects.filter(run=run, path__startswith=artifact_prefix(model_id) + "/").delete()
            RunTag.objects.filter(run=run, key=RECORD_PREFIX + model_id).delete()
            transaction.on_commit(lambda: [storage.delete_blob(k) for k in keys])
        return ok()
    # PATCH: finalize
    record["status"] = parse_status(request.params.raw("status"))
    save(record, run)
    return ok({"model": model_json(record, run, ctx.workspace)})


@mlflow_endpoint(methods=("PATCH",))
def set_tags(request, model_id):
    ctx = request.mlflow
    with transaction.atomic():
        record, run = load(ctx, model_id, write=True)
        record.setdefault("tags", {}).update(_pairs(request.params.list("tags"), "tag"))
        save(record, run)
    return ok({"model": model_json(record, run, ctx.workspace)})


@mlflow_endpoint(methods=("DELETE",), json_body=False)
def delete_tag(request, model_id, key):
    ctx = request.mlflow
    with transaction.atomic():
        record, run = load(ctx, model_id, write=True)
        if key not in record.get("tags", {}):
            raise not_found(f"No tag with key {key!r} on logged model {model_id}")
        del record["tags"][key]
        save(record, run)
    return ok()


@mlflow_endpoint(methods=("POST",))
def log_params(request, model_id):
    ctx = request.mlflow
    with transaction.atomic():
        record, run = load(ctx, model_id, write=True)
        record.setdefault("params", {}).update(_pairs(request.params.list("params"), "param"))
        save(record, run)
    return ok()


_FILTER_RE = re.compile(
    r"""^\s*(?P<field>name|model_id|status|model_type|source_run_id|(?:tags?|params?)\.(?:`[^`]+`|[\w.\-/]+))\s*"""
    r"""(?P<op>=|!=|LIKE|ILIKE)\s*(?P<value>'(?:[^']|'')*'|"[^"]*")\s*$""",
    re.IGNORECASE,
)


def _conditions(text):
    conditions = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE) if text and text.strip() else []:
        match = _FILTER_RE.match(part)
        if not match:
            raise invalid(
                f"Invalid logged model filter {part.strip()!r}: expected name, model_id, status, model_type, "
                "source_run_id, tags.<key> or params.<key> with = != LIKE ILIKE and a quoted string"
            )
        field = match["field"]
        if "." in field:
            kind, key = field.split(".", 1)
            field = ("tags" if kind.lower().startswith("tag") else "params") + "." + key.strip("`")
        conditions.append((field, match["op"].upper(), match["value"][1:-1].replace("''", "'")))
    return conditions


def _value(record, field):
    if field.startswith(("tags.", "params.")):
        kind, key = field.split(".", 1)
        return record.get(kind, {}).get(key)
    return record.get(field.lower(), "")


def _matches(record, conditions):
    from tracker.mlflow_compat.views import _like

    for field, op, value in conditions:
        actual = _value(record, field)
        if actual is None:
            return False
        if op == "=" and actual != value or op == "!=" and actual == value:
            return False
        if op in ("LIKE", "ILIKE") and not _like(value, actual, op == "ILIKE"):
            return False
    return True


@mlflow_endpoint(methods=("POST",))
def search(request):
    ctx = request.mlflow
    params = request.params
    experiments = [get_experiment(ctx, str(e)) for e in params.list("experiment_ids")]
    if not experiments:
        raise invalid("experiment_ids must name at least one experiment")
    max_results = params.int("max_results", conf.LOGGED_MODELS_DEFAULT, minimum=1, maximum=conf.LOGGED_MODELS_MAX)
    offset = (decode_token(params.str("page_token"), "offset") or {"offset": 0})["offset"]
    conditions = _conditions(params.str("filter"))
    tags = RunTag.objects.select_related("run__experiment__workspace").filter(
        key__startswith=RECORD_PREFIX, run__experiment__in=experiments
    )
    found = []
    for tag in tags:
        record = json.loads(tag.value)
        if _matches(record, conditions):
            found.append((record, tag.run))
    descending = True
    sort_field = "creation_timestamp_ms"
    for clause in params.list("order_by"):
        if isinstance(clause, dict) and clause.get("field_name"):
            sort_field = clause["field_name"]
            descending = not clause.get("ascending", True)
    found.sort(key=lambda pair: (str(pair[0].get(sort_field, "")) if sort_field == "name" else pair[0].get(sort_field, 0)), reverse=descending)
    page = found[offset : offset + max_results + 1]
    body = {"models": [model_json(r, run, ctx.workspace) for r, run in page[:max_results]]}
    if len(page) > max_results:
        body["next_page_token"] = encode_token({"offset": offset + max_results})
    return ok(body)


@mlflow_endpoint(methods=("GET",))
def list_artifacts(request, model_id):
    from tracker.mlflow_compat.artifacts import listing

    ctx = request.mlflow
    _record, run = load(ctx, model_id)
    prefix = artifact_prefix(model_id)
    sub = request.params.str("artifact_directory_path").strip("/")
    return ok({"files": listing(run, f"{prefix}/{sub}" if sub else prefix), "root_uri": ""})
