"""Torchlight objects as MLflow JSON (the proto field names of mlflow/protos/service.proto).

Ids: an experiment is its primary key ("0" is the workspace's "Default"),
a run is its UUID in hex. Times are unix milliseconds. NaN and ±Inf are the
strings "NaN", "Infinity", "-Infinity" (protobuf JSON), never bare tokens.
"""

import math
import uuid

from tracker.mlflow_compat import conf
from tracker.mlflow_compat.errors import invalid, not_found
from tracker.models import MetricSeries, Param, RunStatus, RunTag

# Tags Torchlight keeps for itself on runs (logged-model records, outputs): not shown to MLflow clients.
HIDDEN_TAG_PREFIX = "mlflow.torchlight."

TO_MLFLOW_STATUS = {
    RunStatus.QUEUED: "SCHEDULED",
    RunStatus.PREPARING: "SCHEDULED",
    RunStatus.SCALING: "SCHEDULED",
    RunStatus.RUNNING: "RUNNING",
    RunStatus.POST_PROCESSING: "RUNNING",
    RunStatus.COMPLETED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.CANCELED: "KILLED",
}
FROM_MLFLOW_STATUS = {
    "RUNNING": RunStatus.RUNNING,
    "SCHEDULED": RunStatus.QUEUED,
    "FINISHED": RunStatus.COMPLETED,
    "FAILED": RunStatus.FAILED,
    "KILLED": RunStatus.CANCELED,
}


def millis(dt):
    return int(dt.timestamp() * 1000) if dt else None


def number(value):
    """A float as protobuf JSON: NaN/±Inf as strings."""
    if value is None:
        return "NaN"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


# ---------------------------------------------------------------- ids


def experiment_id(experiment, workspace):
    if experiment.workspace_id == workspace.pk and experiment.name == conf.DEFAULT_EXPERIMENT_NAME:
        return "0"
    return str(experiment.pk)


def parse_run_id(raw):
    """A UUID from the MLflow run id (32 hex digits; the dashed form is accepted too)."""
    try:
        return uuid.UUID(str(raw).strip())
    except (ValueError, AttributeError, TypeError):
        raise not_found(f"Run '{raw}' not found") from None


def parse_experiment_pk(raw):
    """The experiment primary key of an MLflow id, or 0 for the Default experiment; None if malformed."""
    text = str(raw).strip()
    if not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def run_artifact_uri(run, workspace):
    return f"mlflow-artifacts:/{experiment_id(run.experiment, workspace)}/{run.id.hex}/artifacts"


# ---------------------------------------------------------------- experiments


def experiment_json(experiment, workspace):
    eid = experiment_id(experiment, workspace)
    return {
        "experiment_id": eid,
        "name": experiment.name,
        "artifact_location": f"mlflow-artifacts:/{eid}",
        "lifecycle_stage": "deleted" if experiment.archived else "active",
        "creation_time": millis(experiment.created_at),
        "last_update_time": millis(experiment.updated_at),
        "tags": [{"key": k, "value": str(v)} for k, v in sorted((experiment.tags or {}).items())]
        + ([{"key": "mlflow.note.content", "value": experiment.description}] if experiment.description else []),
    }


# ---------------------------------------------------------------- runs


def run_info_json(run, workspace):
    return {
        "run_id": run.id.hex,
        "run_uuid": run.id.hex,
        "run_name": run.name,
        "experiment_id": experiment_id(run.experiment, workspace),
        "user_id": run.created_by.username if run.created_by_id and run.created_by else "",
        "status": TO_MLFLOW_STATUS.get(run.status, "RUNNING"),
        "start_time": millis(run.start_time or run.created_at),
        "end_time": millis(run.end_time) if run.is_terminal else None,
        "artifact_uri": run_artifact_uri(run, workspace),
        "lifecycle_stage": "active",
    }


def _strip_none(data):
    return {k: v for k, v in data.items() if v is not None}


def runs_json(runs, workspace):
    """Full MLflow Run objects for `runs` (a list), with data loaded in three queries whatever the count."""
    ids = [r.pk for r in runs]
    params, tags, metrics, outputs = {}, {}, {}, {}
    for run_id, key, value in Param.objects.filter(run_id__in=ids).values_list("run_id", "key", "value"):
        params.setdefault(run_id, []).append({"key": key, "value": value})
    for run_id, key, value in RunTag.objects.filter(run_id__in=ids).values_list("run_id", "key", "value"):
        if key.startswith(HIDDEN_TAG_PREFIX):
            if key == OUTPUTS_TAG:
                outputs[run_id] = _outputs(value)
            continue
        tags.setdefault(run_id, []).append({"key": key, "value": value})
    series = MetricSeries.objects.filter(run_id__in=ids, count__gt=0).values_list(
        "run_id", "key", "last_value", "last_timestamp", "last_step"
    )
    for run_id, key, value, ts, step in series:
        metrics.setdefault(run_id, []).append(
            {"key": key, "value": number(value), "timestamp": int((ts or 0) * 1000), "step": step or 0}
        )
    result = []
    for run in runs:
        tag_list = tags.get(run.pk, [])
        if run.name and not any(t["key"] == "mlflow.runName" for t in tag_list):
            tag_list.append({"key": "mlflow.runName", "value": run.name})
        result.append(
            {
                "info": _strip_none(run_info_json(run, workspace)),
                "data": {
                    "metrics": metrics.get(run.pk, []),
                    "params": params.get(run.pk, []),
                    "tags": tag_list,
                },
                "inputs": {"dataset_inputs": [], "model_inputs": []},
                "outputs": {"model_outputs": outputs.get(run.pk, [])},
            }
        )
    return result


OUTPUTS_TAG = HIDDEN_TAG_PREFIX + "outputs"


def _outputs(value):
    import json

    try:
        items = json.loads(value)
    except ValueError:
        return []
    return [{"model_id": i["model_id"], "step": i.get("step", 0)} for i in items if isinstance(i, dict) and "model_id" in i]


def metric_json(key, step, value, timestamp):
    return {"key": key, "value": number(value), "timestamp": int(round(timestamp * 1000)), "step": step}


def parse_status(raw):
    if raw in (None, ""):
        return None
    status = FROM_MLFLOW_STATUS.get(str(raw).upper())
    if status is None:
        raise invalid(f"unknown run status {raw!r}; one of {', '.join(FROM_MLFLOW_STATUS)}")
    return status
