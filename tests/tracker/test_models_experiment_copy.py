"""MetricSeries and Param copy their run's experiment: filled on every creation path, moved with the run."""

import re

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tracker import metric_store, services
from tracker.models import Experiment, MetricSeries, Param, Run
from tracker.run_filter import apply_filter


@pytest.fixture
def elsewhere(workspace, owner):
    return Experiment.objects.create(workspace=workspace, name="elsewhere", created_by=owner)


def copies(run):
    return {
        "series": set(MetricSeries.objects.filter(run=run).values_list("experiment_id", flat=True)),
        "params": set(Param.objects.filter(run=run).values_list("experiment_id", flat=True)),
    }


@pytest.mark.django_db
def test_it_fills_the_experiment_on_create_and_bulk_create(run, experiment):
    MetricSeries.objects.create(run=run, key="a", count=1, last_value=1.0)
    Param.objects.create(run=run, key="a", value="x")
    # Objects naming their run by id only (the run not loaded): one lookup for the whole batch.
    MetricSeries.objects.bulk_create([MetricSeries(run_id=run.pk, key=k) for k in ("b", "c")], ignore_conflicts=True)
    Param.objects.bulk_create([Param(run_id=run.pk, key=k, value="y") for k in ("b", "c")])
    MetricSeries.objects.get_or_create(run=run, key="d")
    assert copies(run) == {"series": {experiment.pk}, "params": {experiment.pk}}
    assert MetricSeries.objects.filter(run=run).count() == 4 and Param.objects.filter(run=run).count() == 3


@pytest.mark.django_db
def test_it_fills_the_experiment_through_ingest_and_services(experiment, owner):
    run = services.create_run(experiment=experiment, user=owner, name="svc", params={"lr": "0.1"})
    services.log_params(Run.objects.get(pk=run.pk), {"optimizer": "adam"})  # a fresh run: experiment not loaded
    metric_store.ingest(run, [{"key": "loss", "value": 0.5, "step": 0, "timestamp": 1.0}])
    assert copies(run) == {"series": {experiment.pk}, "params": {experiment.pk}}
    assert Param.objects.filter(run=run).count() == 2


@pytest.mark.django_db
def test_a_moved_run_sorts_and_filters_in_its_new_experiment_only(run, experiment, elsewhere, login, owner):
    MetricSeries.objects.create(run=run, key="loss", count=1, last_value=0.25)
    Param.objects.create(run=run, key="optimizer", value="adam")
    run.move_to_experiment(elsewhere)
    assert copies(run) == {"series": {elsewhere.pk}, "params": {elsewhere.pk}}
    text = "metrics.loss < 0.5 and params.optimizer = 'adam'"
    assert list(apply_filter(Run.objects.for_experiment(elsewhere), text, experiment=elsewhere)) == [run]
    assert list(apply_filter(Run.objects.for_experiment(experiment), text, experiment=experiment)) == []
    client = login(owner)
    names = re.compile(r'<td><a href="/runs/[0-9a-f-]+/">([^<]+)</a></td>')
    for exp, expected in ((elsewhere, ["run-1"]), (experiment, [])):
        body = client.get(f"/experiments/{exp.pk}/?metrics=loss&sort=-metrics.loss&filter=params.optimizer+%3D+%27adam%27")
        assert names.findall(body.content.decode()) == expected


@pytest.mark.django_db
def test_a_full_save_with_a_new_experiment_moves_the_copies_too(run, elsewhere):
    # What the admin's run form does: change the experiment field, then save().
    MetricSeries.objects.create(run=run, key="loss", count=1, last_value=0.25)
    Param.objects.create(run=run, key="lr", value="0.1")
    run.experiment = elsewhere
    run.save()
    assert copies(run) == {"series": {elsewhere.pk}, "params": {elsewhere.pk}}


@pytest.mark.django_db
def test_saving_other_fields_leaves_the_copies_alone(run, experiment):
    MetricSeries.objects.create(run=run, key="loss", count=1, last_value=0.25)
    run.set_progress(1, 10)
    run.name = "renamed"
    run.save(update_fields=["name"])
    assert copies(run)["series"] == {experiment.pk}


@pytest.mark.django_db(transaction=True)
def test_the_migration_fills_existing_rows_and_reverses(workspace, owner):
    experiment = Experiment.objects.create(workspace=workspace, name="old", created_by=owner)
    run = Run.objects.create(experiment=experiment, name="old-run", created_by=owner)
    executor = MigrationExecutor(connection)
    try:
        executor.migrate([("tracker", "0002_metric_buckets_ingest_batches")])
        with connection.cursor() as cursor:  # rows written before the column existed
            run_id = Run._meta.pk.get_db_prep_value(run.pk, connection)
            cursor.execute("INSERT INTO tracker_metricseries (run_id, key, count, nonfinite_count) "
                           "VALUES (%s, 'loss', 0, 0)", [run_id])
            cursor.execute("INSERT INTO tracker_param (run_id, key, value) VALUES (%s, 'lr', '0.1')", [run_id])
    finally:
        call_command("migrate", "tracker", verbosity=0)
    assert copies(run) == {"series": {experiment.pk}, "params": {experiment.pk}}
