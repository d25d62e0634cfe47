"""Experiments, runs, params, tags and metrics through the real mlflow client."""

import math

import mlflow
import pytest
import requests
from mlflow.exceptions import MlflowException

from tracker.models import Experiment, MetricSeries, Param, Run, RunStatus, RunTag

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_logs_a_run_that_is_ordinary_torchlight_data(tracking, workspace, owner):
    mlflow.set_experiment("mnist-mlflow")
    with mlflow.start_run(run_name="first") as active:
        mlflow.log_params({"lr": 0.01, "optimizer": "adam"})
        mlflow.set_tag("team", "vision")
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        run_id = active.info.run_id

    run = Run.objects.get(pk=run_id)
    assert run.experiment.workspace == workspace
    assert run.experiment.name == "mnist-mlflow"
    assert run.name == "first"
    assert run.created_by == owner
    assert run.status == RunStatus.COMPLETED
    assert dict(Param.objects.filter(run=run).values_list("key", "value")) == {"lr": "0.01", "optimizer": "adam"}
    assert RunTag.objects.get(run=run, key="team").value == "vision"
    series = MetricSeries.objects.get(run=run, key="loss")
    assert series.count == 5 and series.last_step == 4 and series.last_value == pytest.approx(0.2)

    fetched = tracking.get_run(run_id)
    assert fetched.info.status == "FINISHED"
    assert fetched.info.run_name == "first"
    assert fetched.data.params == {"lr": "0.01", "optimizer": "adam"}
    assert fetched.data.metrics == {"loss": pytest.approx(0.2)}
    assert fetched.data.tags["team"] == "vision"
    assert fetched.info.artifact_uri == f"mlflow-artifacts:/{run.experiment_id}/{run_id}/artifacts"
    history = tracking.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, pytest.approx(1.0 / (s + 1))) for s in range(5)]


def test_it_has_the_default_experiment_zero(tracking, workspace):
    experiment = tracking.get_experiment("0")
    assert experiment.name == "Default"
    assert tracking.get_experiment_by_name("Default").experiment_id == "0"
    with mlflow.start_run() as active:
        mlflow.log_metric("x", 1)
    run = Run.objects.get(pk=active.info.run_id)
    assert run.experiment.name == "Default" and run.experiment.workspace == workspace
    assert run.name  # a generated name, as MLflow gives one
    assert Experiment.objects.filter(workspace=workspace, name="Default").count() == 1


def test_it_round_trips_nan_and_infinity(tracking):
    mlflow.set_experiment("nonfinite")
    with mlflow.start_run() as active:
        mlflow.log_metric("v", float("nan"), step=0)
        mlflow.log_metric("v", float("inf"), step=1)
        mlflow.log_metric("v", float("-inf"), step=2)
        mlflow.log_metrics({"w": float("nan")}, step=0)
    history = tracking.get_metric_history(active.info.run_id, "v")
    values = [m.value for m in history]
    assert math.isnan(values[0]) and values[1] == math.inf and values[2] == -math.inf
    assert math.isnan(tracking.get_run(active.info.run_id).data.metrics["w"])
    series = MetricSeries.objects.get(run_id=active.info.run_id, key="v")
    assert series.nonfinite_count == 3


def test_it_logs_batches_all_or_nothing(tracking):
    from mlflow.entities import Metric
    from mlflow.entities import Param as MlParam

    experiment_id = mlflow.create_experiment("batches")
    run = tracking.create_run(experiment_id)
    run_id = run.info.run_id
    metrics = [Metric("acc", i / 3000, 1_700_000_000_000 + i, i) for i in range(3000)]
    tracking.log_batch(run_id, metrics=metrics, params=[MlParam("depth", "18")])
    assert MetricSeries.objects.get(run_id=run_id, key="acc").count == 3000
    history = tracking.get_metric_history(run_id, "acc")
    assert len(history) == 3000 and history[-1].timestamp == 1_700_000_000_000 + 2999

    with pytest.raises(MlflowException) as caught:
        tracking.log_batch(run_id, metrics=[Metric("late", 1.0, 0, 0)], params=[MlParam("depth", "50")])
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert not MetricSeries.objects.filter(run_id=run_id, key="late").exists()
    assert Param.objects.get(run_id=run_id, key="depth").value == "18"


def test_it_pages_metric_history_with_page_tokens(tracking, live_server, mlflow_token):
    from mlflow.entities import Metric

    experiment_id = mlflow.create_experiment("paging")
    run_id = tracking.create_run(experiment_id).info.run_id
    # Four points at step 3: page boundaries between them (and a page that is all step 3) lose none.
    steps = [0, 1, 2, 3, 3, 3, 3, 4, 5]
    tracking.log_batch(run_id, metrics=[Metric("m", float(i), 1000 + i, s) for i, s in enumerate(steps)])
    headers = {"Authorization": f"Bearer {mlflow_token}"}
    seen, token = [], None
    for _ in range(10):
        params = {"run_id": run_id, "metric_key": "m", "max_results": 2}
        if token:
            params["page_token"] = token
        body = requests.get(f"{live_server.url}/api/2.0/mlflow/metrics/get-history", params=params, headers=headers).json()
        seen += [(m["step"], m["value"]) for m in body["metrics"]]
        token = body.get("next_page_token")
        if not token:
            break
    assert seen == [(s, float(i)) for i, s in enumerate(steps)]


def test_it_searches_runs_with_filters_and_order(tracking):
    experiment_id = mlflow.create_experiment("search")
    for lr in ("0.1", "0.01", "0.001"):
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"lr-{lr}"):
            mlflow.log_param("lr", lr)
            mlflow.log_metric("acc", float(lr) * 10)
    found = mlflow.search_runs([experiment_id], filter_string="params.lr = '0.01'", output_format="list")
    assert [r.info.run_name for r in found] == ["lr-0.01"]
    ordered = tracking.search_runs([experiment_id], order_by=["metrics.acc DESC"])
    assert [r.data.params["lr"] for r in ordered] == ["0.1", "0.01", "0.001"]
    paged = tracking.search_runs([experiment_id], max_results=2, order_by=["metrics.acc ASC"])
    assert len(paged) == 2 and paged.token
    rest = tracking.search_runs([experiment_id], max_results=2, order_by=["metrics.acc ASC"], page_token=paged.token)
    assert [r.data.params["lr"] for r in rest] == ["0.1"]
    frame = mlflow.search_runs([experiment_id], filter_string="metrics.acc > 0.05")
    assert sorted(frame["params.lr"]) == ["0.01", "0.1"]
    with pytest.raises(MlflowException) as caught:
        tracking.search_runs([experiment_id], filter_string="params.lr = = 'x'")
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"


def test_it_answers_client_mistakes_with_mlflow_error_codes(tracking):
    experiment_id = mlflow.create_experiment("errors")
    with pytest.raises(MlflowException) as caught:
        mlflow.create_experiment("errors")
    assert caught.value.error_code == "RESOURCE_ALREADY_EXISTS"

    with pytest.raises(MlflowException) as caught:
        tracking.get_run("0123456789abcdef0123456789abcdef")
    assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as caught:
        tracking.get_experiment("987654")
    assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"

    run_id = tracking.create_run(experiment_id).info.run_id
    tracking.log_param(run_id, "lr", "0.1")
    tracking.log_param(run_id, "lr", "0.1")  # the same value again is fine
    with pytest.raises(MlflowException) as caught:
        tracking.log_param(run_id, "lr", "0.2")
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert Param.objects.get(run_id=run_id, key="lr").value == "0.1"

    with pytest.raises(MlflowException) as caught:
        tracking.log_metric(run_id, "bad\nkey", 1.0)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
