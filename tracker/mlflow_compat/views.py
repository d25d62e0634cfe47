"""MLflow tracking endpoints: experiments, runs, params, tags, metrics (REST API 2.0 as mlflow 3.x calls it)."""

import base64
import itertools
import json
import math
import random
import re

from django.db import IntegrityError, connection, transaction
from django.db.models import F, OuterRef, Subquery
from django.http import JsonResponse

from tracker import metric_store, services
from tracker.mlflow_compat import conf
from tracker.mlflow_compat.api import mlflow_endpoint, to_int
from tracker.mlflow_compat.errors import MlflowError, already_exists, invalid, not_found
from tracker.mlflow_compat.serializers import (
    HIDDEN_TAG_PREFIX,
    OUTPUTS_TAG,
    experiment_json,
    metric_json,
    parse_experiment_pk,
    parse_run_id,
    parse_status,
    run_info_json,
    runs_json,
)
from tracker.models import TERMINAL_STATUSES, Experiment, Run, RunTag
from tracker.run_filter import FilterError, apply_filter


def ok(data=None):
    # One body with Content-Length (set by CommonMiddleware): gunicorn sends it with TCP_NODELAY, no Nagle stall.
    return JsonResponse(data or {}, json_dumps_params={"allow_nan": False, "separators": (",", ":")})


# ---------------------------------------------------------------- page tokens


def encode_token(data):
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()


def decode_token(raw, *fields):
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw.encode() + b"=" * (-len(raw) % 4)))
        if not isinstance(data, dict) or any(not isinstance(data.get(f), int) or data[f] < 0 for f in fields):
            raise ValueError
        return data
    except (ValueError, TypeError, UnicodeDecodeError, base64.binascii.Error):
        raise invalid(f"invalid page_token {raw[:40]!r}") from None


# ---------------------------------------------------------------- lookups


def default_experiment(ctx):
    experiment, _ = Experiment.objects.select_related("workspace").get_or_create(
        workspace=ctx.workspace, name=conf.DEFAULT_EXPERIMENT_NAME, defaults={"created_by": ctx.user}
    )
    return experiment


def get_experiment(ctx, raw_id, write=False):
    pk = parse_experiment_pk(raw_id)
    if pk == 0:
        ctx.check(ctx.workspace.pk, write)
        return default_experiment(ctx)
    experiment = Experiment.objects.select_related("workspace").filter(pk=pk).first() if pk else None
    if experiment is None or experiment.workspace_id not in ctx.roles:
        raise not_found(f"No Experiment with id={raw_id} exists")
    ctx.check(experiment.workspace_id, write)
    return experiment


def get_run(ctx, raw_id, write=False, full=True):
    """The run `raw_id` names, checked for the caller; full=False loads only what a write needs (one light query)."""
    if not raw_id:
        raise invalid("Missing value for required parameter 'run_id'.")
    run_uuid = parse_run_id(raw_id)
    if full:
        run = Run.objects.select_related("experiment__workspace", "created_by").filter(pk=run_uuid).first()
        workspace_id = run.experiment.workspace_id if run else None
    else:
        row = _light_run_row(run_uuid)
        run, workspace_id = None, None
        if row is not None:
            run = Run(id=run_uuid, experiment_id=row[0], status=row[2], created_by_id=row[3])
            run._state.adding = False
            workspace_id = row[1]
    if run is None:
        raise not_found(f"Run '{raw_id}' not found")
    ctx.check_run(run, workspace_id, write)
    return run


def _raw_rows(sql, params):
    """All rows of `sql` ({p} marks a parameter) on the raw DB-API cursor: no ORM compile, no wrapper per row."""
    connection.ensure_connection()
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql.format(p="?" if connection.vendor == "sqlite" else "%s"), params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _light_run_row(run_uuid):
    """(experiment_id, workspace_id, status, created_by_id) of a run, or None.

    Raw SQL: a log_metric request is a few milliseconds in all, and compiling the ORM query was one of them.
    """
    rows = _raw_rows(
        "SELECT r.experiment_id, e.workspace_id, r.status, r.created_by_id FROM tracker_run r "
        "JOIN tracker_experiment e ON e.id = r.experiment_id WHERE r.id = {p}",
        [Run._meta.pk.get_db_prep_value(run_uuid, connection)],
    )
    return rows[0] if rows else None


def run_id_param(params):
    return params.str("run_id") or params.str("run_uuid")


def _check_key(key, what):
    if key.startswith(HIDDEN_TAG_PREFIX):
        raise invalid(f"{what} keys starting with {HIDDEN_TAG_PREFIX!r} are reserved for Torchlight")


# ---------------------------------------------------------------- experiments


@mlflow_endpoint(methods=("GET",))
def experiment_get_by_name(request):
    ctx = request.mlflow
    name = request.params.str("experiment_name", required=True)
    ctx.check(ctx.workspace.pk)
    if name == conf.DEFAULT_EXPERIMENT_NAME:
        experiment = default_experiment(ctx)
    else:
        experiment = Experiment.objects.select_related("workspace").filter(workspace=ctx.workspace, name=name).first()
    if experiment is None:
        raise not_found(f"Could not find experiment with name '{name}'")
    return ok({"experiment": experiment_json(experiment, ctx.workspace)})


@mlflow_endpoint(methods=("GET",))
def experiment_get(request):
    ctx = request.mlflow
    experiment = get_experiment(ctx, request.params.str("experiment_id", required=True))
    return ok({"experiment": experiment_json(experiment, ctx.workspace)})


def _experiment_tags(items):
    tags = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"].strip():
            raise invalid("each tag is an object with a non-empty 'key'")
        tags[item["key"]] = "" if item.get("value") is None else str(item["value"])
    return tags


@mlflow_endpoint(methods=("POST",))
def experiment_create(request):
    ctx = request.mlflow
    ctx.require_personal("create experiments")
    ctx.check(ctx.workspace.pk, write=True)
    name = request.params.str("name", required=True).strip()
    if len(name) > 200:
        raise invalid("experiment names are at most 200 characters")
    tags = _experiment_tags(request.params.list("tags"))
    description = tags.pop("mlflow.note.content", "")
    try:
        with transaction.atomic():
            if Experiment.objects.filter(workspace=ctx.workspace, name=name).exists():
                raise IntegrityError
            experiment = Experiment.objects.create(
                workspace=ctx.workspace, name=name, tags=tags, description=description, created_by=ctx.user
            )
    except IntegrityError:
        raise already_exists(f"Experiment(name={name}) already exists.") from None
    return ok({"experiment_id": experiment_json(experiment, ctx.workspace)["experiment_id"]})


_EXPERIMENT_FILTER_RE = re.compile(
    r"""^\s*(?:attributes?\.)?(?P<field>name|tags?\.(?:`[^`]+`|"[^"]+"|[\w.\-/]+))\s*"""
    r"""(?P<op>=|!=|LIKE|ILIKE)\s*(?P<value>'(?:[^']|'')*'|"[^"]*")\s*$""",
    re.IGNORECASE,
)


def _like(pattern, text, insensitive):
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.IGNORECASE | re.DOTALL if insensitive else re.DOTALL) is not None


def _experiment_filter(text):
    """[(field, op, value)] from MLflow's experiment filter (name and tags.<key>, joined by AND)."""
    conditions = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE) if text.strip() else []:
        match = _EXPERIMENT_FILTER_RE.match(part)
        if not match:
            raise invalid(f"Invalid experiment filter {part.strip()!r}: expected name or tags.<key> with = != LIKE ILIKE and a quoted string")
        field = match["field"]
        if field.lower().startswith("tag"):
            field = "tags." + field.split(".", 1)[1].strip('`"')
        else:
            field = "name"
        value = match["value"][1:-1].replace("''", "'")
        conditions.append((field, match["op"].upper(), value))
    return conditions


def _experiment_matches(experiment, conditions):
    for field, op, value in conditions:
        if field == "name":
            actual = experiment.name
        else:
            actual = (experiment.tags or {}).get(field[5:])
            if actual is None:
                return False
            actual = str(actual)
        if op == "=" and actual != value or op == "!=" and actual == value:
            return False
        if op in ("LIKE", "ILIKE") and not _like(value, actual, op == "ILIKE"):
            return False
    return True


_EXPERIMENT_ORDER = {"name": "name", "creation_time": "created_at", "last_update_time": "updated_at", "experiment_id": "pk"}


@mlflow_endpoint(methods=("POST", "GET"))
def experiment_search(request):
    ctx = request.mlflow
    params = request.params
    ctx.check(ctx.workspace.pk)
    max_results = params.int("max_results", conf.SEARCH_EXPERIMENTS_DEFAULT, minimum=1, maximum=conf.SEARCH_EXPERIMENTS_MAX)
    offset = (decode_token(params.str("page_token"), "offset") or {"offset": 0})["offset"]
    conditions = _experiment_filter(params.str("filter"))
    view = (params.str("view_type") or "ACTIVE_ONLY").upper()
    default_experiment(ctx)
    qs = Experiment.objects.select_related("workspace").filter(workspace=ctx.workspace)
    if view in ("ACTIVE_ONLY", "1"):
        qs = qs.filter(archived=False)
    elif view in ("DELETED_ONLY", "2"):
        qs = qs.filter(archived=True)
    order = []
    for clause in params.list("order_by"):
        words = str(clause).split()
        if not words:
            continue
        field = _EXPERIMENT_ORDER.get(words[0].split(".")[-1].lower())
        if field is None or len(words) > 2 or (len(words) == 2 and words[1].upper() not in ("ASC", "DESC")):
            raise invalid(f"Invalid order_by clause {clause!r}: one of {', '.join(_EXPERIMENT_ORDER)} then ASC or DESC")
        order.append(("-" if len(words) == 2 and words[1].upper() == "DESC" else "") + field)
    qs = qs.order_by(*(order or ["-created_at"]), "-pk")
    if conditions:
        page = [e for e in qs if _experiment_matches(e, conditions)][offset : offset + max_results + 1]
    else:
        page = list(qs[offset : offset + max_results + 1])
    body = {"experiments": [experiment_json(e, ctx.workspace) for e in page[:max_results]]}
    if len(page) > max_results:
        body["next_page_token"] = encode_token({"offset": offset + max_results})
    return ok(body)


@mlflow_endpoint(methods=("POST",))
def experiment_delete(request):
    ctx = request.mlflow
    ctx.require_personal("delete experiments")
    experiment = get_experiment(ctx, request.params.str("experiment_id", required=True), write=True)
    experiment.archive()
    return ok()


@mlflow_endpoint(methods=("POST",))
def experiment_restore(request):
    ctx = request.mlflow
    ctx.require_personal("restore experiments")
    experiment = get_experiment(ctx, request.params.str("experiment_id", required=True), write=True)
    experiment.unarchive()
    return ok()


@mlflow_endpoint(methods=("POST",))
def experiment_update(request):
    ctx = request.mlflow
    ctx.require_personal("rename experiments")
    experiment = get_experiment(ctx, request.params.str("experiment_id", required=True), write=True)
    new_name = request.params.str("new_name").strip()
    if new_name and new_name != experiment.name:
        if len(new_name) > 200:
            raise invalid("experiment names are at most 200 characters")
        if Experiment.objects.filter(workspace=experiment.workspace, name=new_name).exists():
            raise already_exists(f"Experiment(name={new_name}) already exists.")
        experiment.name = new_name
        experiment.save(update_fields=["name", "updated_at"])
    return ok()


@mlflow_endpoint(methods=("POST",))
def experiment_set_tag(request):
    ctx = request.mlflow
    experiment = get_experiment(ctx, request.params.str("experiment_id", required=True), write=True)
    key = request.params.str("key", required=True)
    value = request.params.str("value")
    if key == "mlflow.note.content":
        experiment.description = value
        experiment.save(update_fields=["description", "updated_at"])
    else:
        experiment.tags = {**(experiment.tags or {}), key: value}
        experiment.save(update_fields=["tags", "updated_at"])
    return ok()


@mlflow_endpoint(methods=("POST",))
def experiment_delete_tag(request):
    ctx = request.mlflow
    experiment = get_experiment(ctx, request.params.str("experiment_id", required=True), write=True)
    key = request.params.str("key", required=True)
    tags = dict(experiment.tags or {})
    if key not in tags:
        raise not_found(f"No tag with name: {key} in experiment with id {experiment.pk}")
    del tags[key]
    experiment.tags = tags
    experiment.save(update_fields=["tags", "updated_at"])
    return ok()


# ---------------------------------------------------------------- runs

_ADJECTIVES = "bright calm bold brave clever eager gentle merry nimble proud quick quiet shy sly swift wise".split()
_NOUNS = "fox owl lynx hare wolf bear crane finch otter seal moth trout heron newt ram yak".split()


def _random_name():
    return f"{random.choice(_ADJECTIVES)}-{random.choice(_NOUNS)}-{random.randint(0, 999)}"


def _tag_dict(items):
    tags = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise invalid("each tag is an object with a 'key' and a 'value'")
        _check_key(item["key"], "tag")
        tags[item["key"]] = "" if item.get("value") is None else str(item["value"])
    return tags


@mlflow_endpoint(methods=("POST",))
def run_create(request):
    ctx = request.mlflow
    ctx.require_personal("create runs")
    params = request.params
    experiment = get_experiment(ctx, params.str("experiment_id") or "0", write=True)
    if experiment.archived:
        raise invalid(f"The experiment {experiment.pk} must be in the 'active' state; it is deleted (archived).")
    tags = _tag_dict(params.list("tags"))
    name = params.str("run_name") or tags.get("mlflow.runName") or _random_name()
    tags["mlflow.runName"] = name
    parent = None
    parent_id = tags.get("mlflow.parentRunId")
    if parent_id:
        try:
            parent = get_run(ctx, parent_id)
        except MlflowError:
            parent = None
    source = tags.get("mlflow.source.name", "")
    commit = tags.get("mlflow.source.git.commit", "")
    try:
        run = services.create_run(
            experiment=experiment,
            user=ctx.user,
            name=name,
            tags=tags,
            parent_run=parent,
            source_note=" @ ".join(p for p in (source, commit) if p),
        )
    except services.InvalidInput as exc:
        raise invalid(str(exc)) from None
    run.experiment = experiment
    run.created_by = ctx.user
    return ok({"run": runs_json([run], ctx.workspace)[0]})


@mlflow_endpoint(methods=("GET",))
def run_get(request):
    ctx = request.mlflow
    run = get_run(ctx, run_id_param(request.params))
    return ok({"run": runs_json([run], ctx.workspace)[0]})


@mlflow_endpoint(methods=("POST",))
def run_update(request):
    ctx = request.mlflow
    params = request.params
    run = get_run(ctx, run_id_param(params), write=True)
    status = parse_status(params.str("status"))
    name = params.raw("run_name")
    try:
        if name is not None and isinstance(name, str) and name.strip():
            services.update_run(run, name=name)
            services.set_tags(run, {"mlflow.runName": run.name})
        # Terminal states are final in Torchlight: resuming a finished run (start_run(run_id=...)) keeps
        # its status; a job's run (run token) gets its final status from the job, not from the script.
        if status is not None and status != run.status and not run.is_terminal:
            if not (ctx.run_token is not None and status in TERMINAL_STATUSES):
                services.update_run(run, status=status)
    except services.InvalidInput as exc:
        raise invalid(str(exc)) from None
    return ok({"run_info": {k: v for k, v in run_info_json(run, ctx.workspace).items() if v is not None}})


def _order_clause(runs, clause, index):
    match = re.fullmatch(
        r"\s*(?:(?P<kind>metrics?|params?|parameters?|tags?|attributes?|attr|run)\.)?"
        r"(?P<key>`[^`]+`|\"[^\"]+\"|[\w./:\-]+)\s*(?P<dir>ASC|DESC)?\s*",
        clause,
        re.IGNORECASE,
    )
    if not match:
        raise invalid(f"Invalid order_by clause {clause!r}")
    kind = (match["kind"] or "attributes").lower()
    key = match["key"].strip('`"')
    desc = (match["dir"] or "ASC").upper() == "DESC"
    alias = f"_order_{index}"
    if kind.startswith("metric"):
        runs = runs.with_metric(key, alias)
    elif kind.startswith("param"):
        runs = runs.with_param(key, alias)
    elif kind.startswith("tag"):
        runs = runs.annotate(**{alias: Subquery(RunTag.objects.filter(run=OuterRef("pk"), key=key).values("value")[:1])})
    else:
        field = {
            "start_time": "created_at", "created": "created_at", "created_at": "created_at", "end_time": "end_time",
            "run_name": "name", "name": "name", "status": "status", "run_id": "id", "user_id": "created_by__username",
        }.get(key.lower())  # fmt: skip
        if field is None:
            raise invalid(f"Invalid order_by clause {clause!r}: unknown attribute {key!r}")
        runs = runs.annotate(**{alias: F(field)})
    expression = F(alias).desc(nulls_last=True) if desc else F(alias).asc(nulls_last=True)
    return runs, expression


@mlflow_endpoint(methods=("POST",))
def run_search(request):
    ctx = request.mlflow
    params = request.params
    max_results = params.int("max_results", conf.SEARCH_RUNS_DEFAULT, minimum=1, maximum=conf.SEARCH_RUNS_MAX)
    offset = (decode_token(params.str("page_token"), "offset") or {"offset": 0})["offset"]
    experiment_ids = [str(e) for e in params.list("experiment_ids")]
    if not experiment_ids:
        raise invalid("experiment_ids must name at least one experiment")
    experiments = [get_experiment(ctx, eid) for eid in experiment_ids]
    runs = Run.objects.select_related("experiment__workspace", "created_by").filter(experiment__in=experiments)
    if ctx.run_token is not None:
        runs = runs.filter(pk=ctx.run_token.pk)
    view = (params.str("run_view_type") or "ACTIVE_ONLY").upper()
    if view in ("DELETED_ONLY", "2"):
        runs = runs.none()  # Torchlight deletes runs for good: there are no deleted runs to list
    try:
        runs = apply_filter(runs, params.str("filter"))
    except FilterError as exc:
        raise invalid(f"Invalid filter {params.str('filter')!r}: {exc}") from None
    order = []
    for index, clause in enumerate(params.list("order_by")):
        runs, expression = _order_clause(runs, str(clause), index)
        order.append(expression)
    runs = runs.order_by(*order, "-created_at", "-pk")
    page = list(runs[offset : offset + max_results + 1])
    body = {"runs": runs_json(page[:max_results], ctx.workspace)}
    if len(page) > max_results:
        body["next_page_token"] = encode_token({"offset": offset + max_results})
    return ok(body)


# ---------------------------------------------------------------- params, tags, metrics


def _param_error(run, errors, wanted):
    error = errors[0]
    if error["code"] == "param_conflict":
        old = run.params.filter(key=error["key"]).values_list("value", flat=True).first()
        return invalid(
            f"Changing param values is not allowed. Param with key='{error['key']}' was already logged with "
            f"value='{old}' for run ID='{run.id.hex}'. Attempted logging new value '{wanted.get(error['key'])}'."
        )
    return invalid("; ".join(f"param {e['key']!r}: {e['message']}" for e in errors))


def _param_dict(items):
    params = {}
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise invalid("each param is an object with a 'key' and a 'value'")
        value = "" if item.get("value") is None else str(item["value"])
        if item["key"] in params and params[item["key"]] != value:
            raise invalid(f"Duplicate parameter keys with different values in one batch: {item['key']!r}")
        params[item["key"]] = value
    return params


def _points(items):
    """Metric points for the metric store from MLflow metric objects; INVALID_PARAMETER_VALUE on junk.

    The common item (finite float value, int64 step and timestamp as protobuf JSON writes them: strings)
    becomes the store's compact [key, value, step, timestamp, epoch] list on a fast path; anything else
    takes the full check below, which also words the errors.
    """
    points = []
    append = points.append
    for index, item in enumerate(items):
        if type(item) is dict and "model_id" not in item:
            key, value, raw_ts, step = item.get("key"), item.get("value"), item.get("timestamp"), item.get("step")
            if (
                type(key) is str
                and type(value) is float
                and value - value == 0
                and type(raw_ts) in _INT_TYPES
                and type(step) in _INT_TYPES
            ):
                try:
                    step, raw_ts = int(step), int(raw_ts)
                except ValueError:
                    pass
                else:
                    if step >= 0 and raw_ts >= 0 and key.strip():
                        append([key, value, step, raw_ts / 1000.0, None])
                        continue
        append(_point(index, item))
    return points


_INT_TYPES = (int, str)


def _point(index, item):
    """One MLflow metric object, checked in full, as a metric store point dict."""
    if not isinstance(item, dict):
        raise invalid(f"metric #{index} is not an object")
    key = item.get("key")
    if not isinstance(key, str) or not key.strip():
        raise invalid(f"metric #{index} has no key")
    value = item.get("value")
    if isinstance(value, str) and value not in ("NaN", "Infinity", "-Infinity"):
        try:
            value = float(value)
        except ValueError:
            raise invalid(f"metric {key!r}: value {value!r} is not a number") from None
    elif value is None or isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise invalid(f"metric {key!r}: value {value!r} is not a number")
    if isinstance(value, float) and not math.isfinite(value):
        value = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    raw_ts = item.get("timestamp")
    if type(raw_ts) is not int:  # noqa: E721 (the common case first: a JSON integer)
        raw_ts = to_int(raw_ts, "timestamp") if raw_ts not in (None, "") else None
    ts = raw_ts / 1000.0 if raw_ts is not None else None
    step = item.get("step")
    if type(step) is not int:  # noqa: E721
        step = to_int(step, "step") if step not in (None, "") else 0
    if step < 0:
        raise invalid(f"metric {key!r}: step must be 0 or more, got {step}")
    if ts is not None and ts < 0:
        raise invalid(f"metric {key!r}: timestamp must be unix milliseconds, got {raw_ts}")
    point = {"key": key, "value": value, "step": step, "timestamp": ts}
    if item.get("model_id"):
        point["model_id"] = item["model_id"]
    return point


def _same(a, b):
    return a == b or (a != a and b != b)


def _without_model_copies(run, points):
    """Drop points that only link an existing point to a logged model (MLflow 3's log_model re-logs them).

    MLflow keys a metric by (key, step, timestamp, value): the copy with a
    model_id is the same point and must not become a second one.
    """
    kept = []
    for point in points:
        model_id = point.pop("model_id", None) if type(point) is dict else None
        if model_id:
            value = float(point["value"]) if isinstance(point["value"], str) else point["value"]
            existing = metric_store.read_history(run, point["key"], start_step=point["step"], end_step=point["step"])
            if point["timestamp"] is not None and any(
                abs(ts - point["timestamp"]) < 1e-3 and _same(v, value) for _s, v, ts, _e in existing
            ):
                continue
        kept.append(point)
    return kept


def _ingest(run, points):
    points = _without_model_copies(run, points)
    if not points:
        return None
    try:
        result = metric_store.ingest(run, points)
    except (metric_store.BatchTooLarge, ValueError) as exc:
        raise invalid(str(exc)) from None
    if result.errors:
        first = result.errors[0]
        raise invalid(f"metric #{first['index']}: {first['message']}" + (f" (and {len(result.errors) - 1} more)" if len(result.errors) > 1 else ""))
    return result


@mlflow_endpoint(methods=("POST",))
def log_metric(request):
    ctx = request.mlflow
    params = request.params
    run = get_run(ctx, run_id_param(params), write=True, full=False)
    points = _points([{k: params.raw(k) for k in ("key", "value", "timestamp", "step")}])
    _ingest(run, points)  # the store's own transaction: one point needs no outer one (nor its savepoint)
    return ok()


@mlflow_endpoint(methods=("POST",))
def log_param(request):
    ctx = request.mlflow
    params = request.params
    run = get_run(ctx, run_id_param(params), write=True, full=False)
    key = params.str("key", required=True)
    value = params.raw("value")
    value = "" if value is None else str(value)
    errors = services.log_params(run, {key: value})
    if errors:
        raise _param_error(run, errors, {key: value})
    return ok()


@mlflow_endpoint(methods=("POST",))
def log_batch(request):
    ctx = request.mlflow
    params = request.params
    run = get_run(ctx, run_id_param(params), write=True, full=False)
    metric_items, param_items, tag_items = params.list("metrics"), params.list("params"), params.list("tags")
    if len(metric_items) > conf.MAX_BATCH_METRICS:
        raise MlflowError("RESOURCE_LIMIT_EXCEEDED", f"A batch logging request can have at most {conf.MAX_BATCH_METRICS} metrics")
    if len(param_items) > conf.MAX_BATCH_PARAMS or len(tag_items) > conf.MAX_BATCH_TAGS:
        raise MlflowError("RESOURCE_LIMIT_EXCEEDED", f"A batch logging request can have at most {conf.MAX_BATCH_PARAMS} params and {conf.MAX_BATCH_TAGS} tags")
    points = _points(metric_items)
    new_params = _param_dict(param_items)
    tags = _tag_dict(tag_items)
    # All or nothing, as in MLflow: a refused param leaves no metric or tag behind.
    with transaction.atomic():
        if new_params:
            errors = services.log_params(run, new_params)
            if errors:
                raise _param_error(run, errors, new_params)
        if tags:
            errors = services.set_tags(run, tags)
            if errors:
                raise invalid("; ".join(f"tag {e['key']!r}: {e['message']}" for e in errors))
            if "mlflow.runName" in tags and tags["mlflow.runName"].strip():
                services.update_run(run, name=tags["mlflow.runName"])
        if points:
            _ingest(run, points)
    return ok()


@mlflow_endpoint(methods=("POST",))
def set_tag(request):
    ctx = request.mlflow
    params = request.params
    run = get_run(ctx, run_id_param(params), write=True, full=False)
    key = params.str("key", required=True)
    _check_key(key, "tag")
    value = params.raw("value")
    value = "" if value is None else str(value)
    with transaction.atomic():
        errors = services.set_tags(run, {key: value})
        if errors:
            raise invalid(f"tag {key!r}: {errors[0]['message']}")
        if key == "mlflow.runName" and value.strip():
            services.update_run(run, name=value)
    return ok()


@mlflow_endpoint(methods=("POST",))
def delete_tag(request):
    ctx = request.mlflow
    params = request.params
    run = get_run(ctx, run_id_param(params), write=True, full=False)
    key = params.str("key", required=True)
    _check_key(key, "tag")
    if not services.delete_tag(run, key):
        raise not_found(f"No tag with name: {key} in run with id {run.id.hex}")
    return ok()


@mlflow_endpoint(methods=("POST",))
def log_inputs(request):
    ctx = request.mlflow
    get_run(ctx, run_id_param(request.params), write=True)
    return ok()  # datasets are not tracked by Torchlight; accepted so mlflow.log_input does not fail


@mlflow_endpoint(methods=("POST",))
def log_outputs(request):
    ctx = request.mlflow
    params = request.params
    run = get_run(ctx, run_id_param(params), write=True, full=False)
    items = params.list("models")
    outputs = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("model_id"), str):
            raise invalid("each model output is an object with a 'model_id'")
        outputs.append({"model_id": item["model_id"], "step": to_int(item.get("step") or 0, "step")})
    with transaction.atomic():
        tag = RunTag.objects.select_for_update().filter(run=run, key=OUTPUTS_TAG).first()
        existing = json.loads(tag.value) if tag else []
        known = {o["model_id"] for o in existing}
        existing += [o for o in outputs if o["model_id"] not in known]
        RunTag.objects.update_or_create(run=run, key=OUTPUTS_TAG, defaults={"value": json.dumps(existing)})
    return ok()


@mlflow_endpoint(methods=("GET",))
def metric_history(request):
    ctx = request.mlflow
    params = request.params
    run = get_run(ctx, run_id_param(params))
    key = params.str("metric_key", required=True)
    max_results = params.int("max_results", None, minimum=1, maximum=conf.HISTORY_PAGE_MAX)
    token = decode_token(params.str("page_token"), "step", "skip")
    series = metric_store.get_series(run, key)
    if series is None:
        return ok({"metrics": []})
    start_step, skip = (token["step"], token["skip"]) if token else (None, 0)
    if max_results is None:
        # No page size: the whole history, read in keyset chunks so memory stays flat.
        rows = ((v, ts * 1000 + 0.5, st) for st, v, ts, _e in metric_store.iter_points(series.pk, start_step=start_step))
        page = list(itertools.islice(rows, skip, None))
    else:
        page = _history_page(series.pk, start_step, skip + max_results + 1)[skip:]
    return _history_response(key, page, start_step, skip, max_results)


def _history_page(series_id, start_step, limit):
    """[(value, timestamp in ms + 0.5, step)] of a series from `start_step` in step order: one query a page.

    The raw DB-API cursor and the millisecond arithmetic in SQL keep the per-row Python work to fetching.
    """
    return _raw_rows(
        "SELECT value, timestamp * 1000 + 0.5, step FROM tracker_metricpoint "
        f"WHERE series_id = {{p}} AND step >= {{p}} ORDER BY step, id LIMIT {int(limit)}",
        [series_id, -1 if start_step is None else start_step],
    )


def _nonfinite(value):
    if value is None or value != value:
        return '"NaN"'
    return '"Infinity"' if value > 0 else '"-Infinity"'


def _history_response(key, page, start_step, skip, max_results):
    """The history as JSON, written by hand: 100k points in a fraction of a second.

    `page` holds (value, timestamp ms + 0.5, step) rows, the first `skip` of the token's step already
    dropped, plus one more row than the page when there is a next page. One C-level format call
    writes the whole page; NaN (NULL) and ±Inf, rare, are swapped for their JSON strings first.
    """
    more = max_results is not None and len(page) > max_results
    if more:
        page = page[:max_results]
    row = '{"key":' + json.dumps(key) + ',"value":%r,"timestamp":%d,"step":%d}'
    values = [point[0] for point in page]
    if None in values or (values and (max(values) == math.inf or min(values) == -math.inf)):
        # v - v == 0 only for finite numbers: NaN (NULL) and ±Inf go to their protobuf JSON strings.
        page = [(v if v is not None and v - v == 0 else _Raw(_nonfinite(v)), ts, st) for v, ts, st in page]
    body = '{"metrics":[' + ",".join([row] * len(page)) % tuple(itertools.chain.from_iterable(page)) + "]"
    if more:
        last_step = page[-1][2]
        same = 0
        for point in reversed(page):
            if point[2] != last_step:
                break
            same += 1
        if same == len(page) and skip and last_step == start_step:
            same += skip  # the whole page sat on the token's step: count the earlier pages' points too
        body += f',"next_page_token":"{encode_token({"step": last_step, "skip": same})}"'
    body += "}"
    response = JsonResponse({}, json_dumps_params={})
    response.content = body.encode()
    return response


class _Raw(str):
    """A string that `%r` writes as itself (a ready JSON token such as "NaN")."""

    def __repr__(self):
        return str(self)


def metric_json_list(key, rows):
    return [metric_json(key, step, value, ts) for step, value, ts, _ in rows]
