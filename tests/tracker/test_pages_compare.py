import html as htmlmod
import json
import re

import pytest

from tracker.models import Experiment, MetricSeries, Param, Run

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture
def three_runs(make_run):
    runs = [make_run(name=f"r{i}") for i in range(3)]
    for i, run in enumerate(runs):
        Param.objects.create(run=run, key="optimizer", value="adam")
        Param.objects.create(run=run, key="lr", value=str(0.1 / (i + 1)))
        MetricSeries.objects.create(run=run, key="loss", last_value=1.0 / (i + 1), count=5)
    Param.objects.create(run=runs[0], key="only_first", value="yes")
    MetricSeries.objects.create(run=runs[1], key="acc", last_value=0.9, count=5)
    return runs


def url(runs):
    return "/compare/?runs=" + ",".join(str(r.id) for r in runs)


@pytest.mark.django_db
def test_it_highlights_params_that_differ(login, reader, three_runs):
    html = login(reader).get(url(three_runs)).content.decode()
    rows = re.findall(r"<tr( class=\"diff\")?><td>([^<]+)</td>", html)
    diff = {key: bool(flag) for flag, key in rows if key in ("optimizer", "lr", "only_first")}
    assert diff == {"optimizer": False, "lr": True, "only_first": True}
    assert "data-only-diff" in html
    assert "2 of 3 differ" in html


@pytest.mark.django_db
def test_it_overlays_one_chart_per_metric_key_with_a_series_per_run(login, reader, three_runs):
    html = login(reader).get(url(three_runs)).content.decode()
    containers = dict(re.findall(r'class="metric-chart chart" data-key="([^"]+)" data-series="([^"]+)"', html))
    assert sorted(containers) == ["acc", "loss"]
    series = json.loads(htmlmod.unescape(containers["loss"]))
    assert [s["label"] for s in series] == ["r0", "r1", "r2"]
    assert series[1]["url"] == f"/runs/{three_runs[1].id}/metrics/loss.json"
    assert "js/compare.js" in html and "plotly/plotly.min.js" in html


@pytest.mark.django_db
def test_it_passes_parallel_coordinates_data_as_json(login, reader, three_runs):
    html = login(reader).get(url(three_runs)).content.decode()
    raw = re.search(r'<script id="parcoords-data" type="application/json">(.*?)</script>', html, re.S).group(1)
    data = json.loads(raw)
    assert data["params"]["optimizer"] == ["adam", "adam", "adam"]
    assert data["params"]["only_first"] == ["yes", None, None]
    assert data["metrics"]["loss"] == [1.0, 0.5, 1.0 / 3]
    assert data["metrics"]["acc"] == [None, 0.9, None]
    assert '<option value="acc">' in html and '<option value="loss">' in html


@pytest.mark.django_db
def test_it_accepts_repeated_run_parameters(login, reader, three_runs):
    query = "&".join(f"run={r.id}" for r in three_runs[:2])
    assert login(reader).get(f"/compare/?{query}").status_code == 200


@pytest.mark.django_db
def test_it_gives_404_when_any_run_is_not_readable(login, reader, three_runs, outsider, other_workspace):
    foreign_experiment = Experiment.objects.create(workspace=other_workspace, name="theirs")
    foreign = Run.objects.create(experiment=foreign_experiment, name="theirs")
    client = login(reader)
    assert client.get(url([three_runs[0], foreign])).status_code == 404
    assert client.get(f"/compare/?runs={three_runs[0].id},not-a-uuid").status_code == 404
    assert client.get(f"/compare/?runs={three_runs[0].id},00000000-0000-0000-0000-000000000000").status_code == 404
    assert login(outsider).get(url(three_runs)).status_code == 404


@pytest.mark.django_db
def test_it_asks_for_two_to_twenty_runs(login, reader, three_runs, make_run):
    client = login(reader)
    response = client.get(url(three_runs[:1]))
    assert response.status_code == 400 and "between 2 and 20" in response.content.decode()
    assert client.get("/compare/").status_code == 400
    many = [make_run(name=f"m{i}") for i in range(21)]
    assert client.get(url(many)).status_code == 400


@pytest.mark.django_db
def test_it_escapes_html_names_in_tables_chart_labels_and_json(login, owner, make_run):
    runs = [make_run(name=EVIL), make_run(name="plain")]
    for run in runs:
        Param.objects.create(run=run, key=EVIL, value=EVIL)
        MetricSeries.objects.create(run=run, key=EVIL, last_value=1.0, count=1)
    html = login(owner).get(url(runs)).content.decode()
    assert EVIL not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
