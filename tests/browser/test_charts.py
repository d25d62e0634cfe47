import pytest

from tests.browser.data import make_experiment

EVIL = "<img src=x onerror=alert(1)>"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def wait_for_drawn(page, count):
    """Wait until `count` chart containers are drawn (a function predicate: the page's CSP forbids eval)."""
    page.wait_for_function(
        "(count) => document.querySelectorAll('.metric-chart[data-drawn=\"1\"]').length === count", arg=count
    )


def chart_traces(page):
    """Per drawn chart: (key, has the plot SVG, number of traces in the plotly graph div)."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.metric-chart[data-drawn="1"]')).map((box) => {
               const graph = box.classList.contains('js-plotly-plot') ? box : box.querySelector('.js-plotly-plot');
               return [box.dataset.key, !!box.querySelector('svg.main-svg'), graph ? graph.data.length : -1];
           })"""
    )


@pytest.mark.django_db(transaction=True)
def test_it_logs_in_opens_an_experiment_and_a_run_and_draws_its_charts(page, log_in, owner, workspace):
    experiment, runs = make_experiment(workspace, owner, runs=2, steps=300)
    log_in(owner)
    page.goto("/w/vision/experiments/")
    page.click(f"text={experiment.name}")
    page.wait_for_selector("#runs")
    assert page.locator("#runs tbody tr").count() == 2
    page.click(f"#runs >> text={runs[1].name}")
    page.wait_for_selector('.metric-chart[data-drawn="1"]')
    wait_for_drawn(page, 2)
    traces = sorted(chart_traces(page))
    assert traces == [["train/loss", True, 1], ["val/acc", True, 1]]
    assert page.js_errors == []


@pytest.mark.django_db(transaction=True)
def test_it_overlays_runs_on_the_compare_page(page, log_in, owner, workspace):
    experiment, runs = make_experiment(workspace, owner, runs=3, steps=200)
    log_in(owner)
    page.goto(f"/experiments/{experiment.pk}/")
    for run in runs:
        page.check(f'input[name="run"][value="{run.id}"]')
    page.click("[data-compare-button]")
    page.wait_for_url("**/compare/?runs=*")
    wait_for_drawn(page, 2)
    assert sorted(chart_traces(page)) == [["train/loss", True, 3], ["val/acc", True, 3]]
    # The parallel-coordinates plot and the "only differences" toggle.
    page.wait_for_selector('#parcoords[data-drawn="1"]')
    # parcoords needs WebGL; headless chromium without a GPU gets the SVG line fallback (one line per run).
    kind, traces, first = page.evaluate(
        "() => { const p = document.getElementById('parcoords'); return [p.dataset.kind, p.data.length, p.data[0].type]; }"
    )
    assert (kind, traces, first) in (("parcoords", 1, "parcoords"), ("lines", 3, "scatter"))
    assert page.locator("#parcoords svg.main-svg").count() >= 1
    page.select_option("[data-parcoords-metric]", "val/acc")
    visible = page.locator("#params-table tbody tr:visible").count()
    page.check("[data-only-diff]")
    assert page.locator("#params-table tbody tr:visible").count() == 2 < visible  # lr and optimizer differ
    assert page.js_errors == []


@pytest.mark.django_db(transaction=True)
def test_it_never_runs_html_from_run_names_in_charts(page, log_in, owner, workspace):
    experiment, runs = make_experiment(workspace, owner, runs=2, steps=50)
    for run in runs:
        run.name = EVIL + run.name
        run.save(update_fields=["name"])
    log_in(owner)
    page.goto("/compare/?runs=" + ",".join(str(r.id) for r in runs))
    wait_for_drawn(page, 2)
    page.goto(f"/runs/{runs[0].id}/")
    wait_for_drawn(page, 2)
    assert page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    assert page.js_errors == []
