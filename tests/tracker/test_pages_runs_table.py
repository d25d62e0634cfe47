import io
import re

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tracker.models import MetricSeries, Param, Run, RunStatus


def populate(experiment, owner, count, metric_keys=("loss", "acc", "val/loss"), param_keys=("lr", "optimizer")):
    runs = Run.objects.bulk_create(
        [Run(experiment=experiment, name=f"run-{i:04d}", created_by=owner, status=RunStatus.COMPLETED)
         for i in range(count)]
    )
    MetricSeries.objects.bulk_create(
        [MetricSeries(run=run, key=key, last_value=(i * 7 % 101) / 100 + k, count=10, min_value=0, max_value=2)
         for i, run in enumerate(runs) for k, key in enumerate(metric_keys)]
    )
    Param.objects.bulk_create(
        [Param(run=run, key=key, value=f"{key}-{i % 5}") for i, run in enumerate(runs) for key in param_keys]
    )
    return runs


def row_names(response):
    return re.findall(r'<td><a href="/runs/[0-9a-f-]+/">([^<]+)</a></td>', response.content.decode())


def count_queries(client, url):
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.django_db
def test_it_issues_the_same_number_of_queries_for_10_and_200_runs(login, owner, experiment, workspace):
    from tracker.models import Experiment

    small = experiment
    large = Experiment.objects.create(workspace=workspace, name="large")
    populate(small, owner, 10)
    populate(large, owner, 200)
    client = login(owner)
    columns = "?metrics=loss,acc,val/loss&params=lr,optimizer"
    for sort in ("", "&sort=params.lr", "&sort=-duration", "&sort=name&filter=metrics.loss+%3E+0"):
        cache.clear()  # the column chooser's key lists are cached: count both cold and warm
        cold = [count_queries(client, f"/experiments/{e.pk}/{columns}{sort}") for e in (small, large)]
        warm = [count_queries(client, f"/experiments/{e.pk}/{columns}{sort}") for e in (small, large)]
        assert cold[0] == cold[1] and warm[0] == warm[1], sort
        assert warm[1] <= 12
    # A metric sort walks the metric's series, then (one more query, only when the page is not
    # full) the runs lacking the metric: at most one apart, never one query per row.
    for sort in ("&sort=-metrics.loss", "&sort=metrics.acc&status=completed&filter=params.lr+%21%3D+%27lr-1%27",
                 "&sort=metrics.acc&filter=metrics.loss+%3E+0.5+and+params.lr+%21%3D+%27lr-1%27"):
        metric_sort = [count_queries(client, f"/experiments/{e.pk}/{columns}{sort}") for e in (small, large)]
        assert metric_sort[1] <= metric_sort[0] <= metric_sort[1] + 1 <= 13, sort
    run_few = count_queries(client, f"/runs/{small.runs.first().id}/")
    assert run_few <= 20


@pytest.mark.django_db
def test_it_sorts_by_a_metric_column_both_ways(login, owner, experiment):
    runs = populate(experiment, owner, 5, metric_keys=("loss",), param_keys=())
    client = login(owner)
    values = {run.name: run.metric_series.get(key="loss").last_value for run in runs}
    ascending = row_names(client.get(f"/experiments/{experiment.pk}/?metrics=loss&sort=metrics.loss"))
    assert ascending == sorted(values, key=values.get)
    descending = row_names(client.get(f"/experiments/{experiment.pk}/?metrics=loss&sort=-metrics.loss"))
    assert descending == list(reversed(ascending))


@pytest.mark.django_db
def test_it_puts_runs_without_the_metric_last(login, owner, experiment, make_run):
    populate(experiment, owner, 3, metric_keys=("loss",), param_keys=())
    make_run(name="no-metric")
    client = login(owner)
    for sort in ("metrics.loss", "-metrics.loss"):
        names = row_names(client.get(f"/experiments/{experiment.pk}/?metrics=loss&sort={sort}"))
        assert names[-1] == "no-metric"


@pytest.mark.django_db
def test_it_sorts_by_name_status_user_and_param(login, owner, experiment, make_run):
    make_run(name="b", status=RunStatus.FAILED)
    make_run(name="a", status=RunStatus.RUNNING)
    make_run(name="c", status=RunStatus.COMPLETED)
    client = login(owner)
    assert row_names(client.get(f"/experiments/{experiment.pk}/?sort=name")) == ["a", "b", "c"]
    assert row_names(client.get(f"/experiments/{experiment.pk}/?sort=-name")) == ["c", "b", "a"]
    assert row_names(client.get(f"/experiments/{experiment.pk}/?sort=status")) == ["c", "b", "a"]
    # An unknown sort falls back to newest first instead of failing.
    assert client.get(f"/experiments/{experiment.pk}/?sort=bogus;drop").status_code == 200


@pytest.mark.django_db
def test_it_lists_the_experiment_keys_in_the_column_chooser(login, owner, experiment):
    populate(experiment, owner, 2, metric_keys=("loss", "acc"), param_keys=("lr",))
    body = login(owner).get(f"/experiments/{experiment.pk}/").content.decode()
    assert 'data-column-kind="metric"' in body
    for key in ("loss", "acc"):
        assert f'value="{key}" data-column-kind="metric"' in body
    assert 'value="lr" data-column-kind="param"' in body
    # A key logged after the first visit shows up at once (the key lists are cached per newest row).
    MetricSeries.objects.create(run=experiment.runs.first(), key="new_key", count=1, last_value=1.0)
    Param.objects.create(run=experiment.runs.first(), key="new_param", value="x")
    body = login(owner).get(f"/experiments/{experiment.pk}/").content.decode()
    assert 'value="new_key" data-column-kind="metric"' in body
    assert 'value="new_param" data-column-kind="param"' in body


@pytest.mark.django_db
def test_it_shows_chosen_param_and_metric_columns(login, owner, experiment):
    populate(experiment, owner, 1, metric_keys=("loss", "acc"), param_keys=("lr", "optimizer"))
    body = login(owner).get(f"/experiments/{experiment.pk}/?params=optimizer&metrics=acc").content.decode()
    assert "optimizer-0" in body and "lr-0" not in body
    assert ">1.0000<" not in body  # acc of run 0 is 1.0 -> rendered as "1"
    assert '<td class="num">1</td>' in body


@pytest.mark.django_db
def test_it_filters_by_status_name_and_filter_box(login, owner, experiment, make_run):
    runs = populate(experiment, owner, 6, metric_keys=("loss",), param_keys=("optimizer",))
    Run.objects.filter(pk=runs[0].pk).update(status=RunStatus.FAILED)
    client = login(owner)
    assert row_names(client.get(f"/experiments/{experiment.pk}/?status=failed")) == ["run-0000"]
    assert row_names(client.get(f"/experiments/{experiment.pk}/?q=0003")) == ["run-0003"]
    names = row_names(client.get(f"/experiments/{experiment.pk}/?filter=params.optimizer+%3D+%27optimizer-2%27"))
    assert names == ["run-0002"]


@pytest.mark.django_db
def test_it_shows_a_bad_filter_message_instead_of_failing(login, owner, experiment, make_run):
    make_run(name="kept")
    response = login(owner).get(f"/experiments/{experiment.pk}/?filter=metrics.loss+%3C+%27abc%27")
    assert response.status_code == 400
    body = response.content.decode()
    assert "Filter not applied" in body and "compared with a number" in body
    assert "kept" in body  # the table still shows the unfiltered runs


@pytest.mark.django_db
def test_it_paginates_50_runs_a_page(login, owner, experiment):
    populate(experiment, owner, 120, metric_keys=(), param_keys=())
    client = login(owner)
    first = row_names(client.get(f"/experiments/{experiment.pk}/?sort=name"))
    assert len(first) == 50 and first[0] == "run-0000"
    third = client.get(f"/experiments/{experiment.pk}/?sort=name&page=3")
    assert row_names(third) == [f"run-{i:04d}" for i in range(100, 120)]
    assert "Page 3 of 3" in third.content.decode()
    # Out of range or junk page numbers land on a real page.
    assert client.get(f"/experiments/{experiment.pk}/?page=999").status_code == 200
    assert client.get(f"/experiments/{experiment.pk}/?page=abc").status_code == 200


@pytest.mark.django_db
def test_it_renders_compare_checkboxes_posting_to_the_compare_page(login, owner, experiment, make_run):
    run = make_run(name="x")
    body = login(owner).get(f"/experiments/{experiment.pk}/").content.decode()
    assert 'action="/compare/"' in body and 'method="get"' in body
    assert f'name="run" value="{run.id}"' in body


@pytest.mark.django_db
def test_it_issues_the_same_number_of_queries_for_a_run_with_2_or_20_metric_keys(login, owner, make_run):
    from tracker import services

    small, large = make_run(name="small"), make_run(name="large")
    for run, keys in ((small, 2), (large, 20)):
        MetricSeries.objects.bulk_create([MetricSeries(run=run, key=f"m{i}", count=1, last_value=i) for i in range(keys)])
        Param.objects.bulk_create([Param(run=run, key=f"p{i}", value="v") for i in range(keys)])
        for i in range(keys // 2):
            services.store_artifact(run, f"dir{i}/file.txt", io.BytesIO(b"x"))
    client = login(owner)
    client.get(f"/runs/{small.id}/")
    counts = [count_queries(client, f"/runs/{run.id}/") for run in (small, large)]
    assert counts[0] == counts[1]
    html = client.get(f"/runs/{large.id}/").content.decode()
    assert html.count('class="metric-chart chart"') == 20


@pytest.mark.django_db
def test_it_pages_a_metric_sort_across_runs_with_and_without_the_metric(login, owner, experiment, make_run):
    runs = populate(experiment, owner, 70, metric_keys=("loss",), param_keys=())
    MetricSeries.objects.filter(run=runs[5], key="loss").update(last_value=None)  # NaN
    lacking = [make_run(name=f"zz-{i}") for i in range(40)]
    client = login(owner)
    for sort in ("-metrics.loss", "metrics.loss"):
        seen = []
        for page in (1, 2, 3):
            seen += row_names(client.get(f"/experiments/{experiment.pk}/?metrics=loss&sort={sort}&page={page}"))
        assert len(seen) == len(set(seen)) == 110
        values = {r.name: MetricSeries.objects.get(run=r, key="loss").last_value for r in runs}
        finite = [n for n in seen[:69]]
        assert [values[n] for n in finite] == sorted((values[n] for n in finite), reverse=sort.startswith("-"))
        assert seen[69] == runs[5].name  # NaN after the numbers
        assert seen[70:] == [r.name for r in reversed(lacking)]  # then runs without the metric, newest first
    # Status and name filters apply to the series walk too.
    names = row_names(client.get(f"/experiments/{experiment.pk}/?metrics=loss&sort=-metrics.loss&q=run-000"))
    assert sorted(names) == [f"run-000{i}" for i in range(10)]


@pytest.mark.django_db
def test_it_pages_a_filtered_metric_sort_like_the_unfiltered_one(login, owner, experiment, workspace, make_run):
    from tracker.models import Experiment

    runs = populate(experiment, owner, 130, metric_keys=("loss",), param_keys=("optimizer",))
    for nan_run in (runs[3], runs[8], runs[13]):  # optimizer-3: NaN losses, listed newest first after the numbers
        MetricSeries.objects.filter(run=nan_run, key="loss").update(last_value=None)
    lacking = [make_run(name=f"zz-{i}", status=RunStatus.COMPLETED) for i in range(3)]
    Param.objects.bulk_create([Param(run=r, key="optimizer", value="optimizer-3") for r in lacking])
    Run.objects.filter(pk=runs[18].pk).update(status=RunStatus.FAILED)
    # Another experiment's runs match the same filter and must never show up.
    populate(Experiment.objects.create(workspace=workspace, name="other"), owner, 20, ("loss",), ("optimizer",))
    client = login(owner)
    url = f"/experiments/{experiment.pk}/?metrics=loss&filter=params.optimizer+%3D+%27optimizer-3%27&status=completed"
    matching = [r for i, r in enumerate(runs) if i % 5 == 3 and i != 18]  # 25 runs, 3 of them NaN
    finite = [r for r in matching if r not in (runs[3], runs[8], runs[13])]
    values = {r.name: MetricSeries.objects.get(run=r, key="loss").last_value for r in finite}
    for sort, reverse in (("-metrics.loss", True), ("metrics.loss", False)):
        names = row_names(client.get(f"{url}&sort={sort}"))
        assert names[:22] == sorted(values, key=values.get, reverse=reverse)
        assert names[22:] == ["run-0013", "run-0008", "run-0003"] + [r.name for r in reversed(lacking)]
    # Metric and param conditions only (no status): NaN fails "> -1", runs lacking the metric too.
    text = "params.optimizer+%3D+%27optimizer-3%27+and+metrics.loss+%3E+-1"
    names = row_names(client.get(f"/experiments/{experiment.pk}/?metrics=loss&filter={text}&sort=-metrics.loss"))
    values[runs[18].name] = MetricSeries.objects.get(run=runs[18], key="loss").last_value
    assert names == sorted(values, key=values.get, reverse=True)
    # Pages of 50 across the numbers / NaN / lacking boundaries, with no filter: every run once.
    seen = []
    for page in (1, 2, 3):
        seen += row_names(client.get(f"/experiments/{experiment.pk}/?metrics=loss&sort=metrics.loss&page={page}"))
    assert len(seen) == len(set(seen)) == 133 and seen[127:130] == ["run-0013", "run-0008", "run-0003"]


@pytest.mark.django_db
def test_it_shows_live_progress_and_long_params_cut_in_the_rows(login, owner, experiment, make_run):
    live = make_run(name="live", status=RunStatus.RUNNING)
    live.set_progress(30, 120)
    done = make_run(name="done", status=RunStatus.COMPLETED)
    done.set_progress(120, 120)
    Param.objects.create(run=live, key="note", value="x" * 80)
    body = login(owner).get(f"/experiments/{experiment.pk}/?params=note").content.decode()
    assert body.count("inline-progress") == 1
    assert '<span class="progress inline-progress" title="25%"><span style="width: 25%"></span></span>' in body
    assert f"<td>{'x' * 59}…</td>" in body and "<td>—</td>" in body
