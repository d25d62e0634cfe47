"""charts.js in a real browser: draw, WebGL for big series, non-finite marks, zoom re-fetch, live extendTraces."""

import math
import time

import pytest

from tracker import metric_store

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
]


def wait_until(pg, script, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pg.evaluate(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {script}")


GRAPH = "document.querySelector('.metric-chart .js-plotly-plot')"


@pytest.mark.django_db(transaction=True)
def test_it_draws_zooms_and_live_updates_a_big_series(page, log_in, owner, run):
    values = [math.sin(i / 500) for i in range(20_000)]
    values[5_000] = 25.0  # a spike the downsampling must keep
    values[7_000] = "NaN"
    for start in range(0, 20_000, 10_000):
        metric_store.ingest(
            run, [{"key": "loss", "value": values[i], "step": i, "timestamp": 1e9 + i} for i in range(start, start + 10_000)]
        )
    log_in(owner)
    page.goto(f"/runs/{run.id}/")
    wait_until(page, "document.querySelector('.metric-chart[data-drawn=\"1\"]') !== null")
    traces = page.evaluate(f"{GRAPH}.data.map(t => [t.name, t.type, t.y.length])")
    assert [t[0] for t in traces] == [run.name, "non-finite"]
    assert 25.0 in page.evaluate(f"{GRAPH}.data[0].y")
    badge = page.locator("[data-badge]")
    assert int(badge.get_attribute("data-total")) == 20_000
    shown = int(badge.get_attribute("data-shown"))
    assert shown < 20_000 and "showing" in badge.inner_text()

    # Zoom into 150 steps (fewer than the ≥ 200 points the page asks for): full resolution.
    page.evaluate(f"Plotly.relayout({GRAPH}, {{'xaxis.range[0]': 1000, 'xaxis.range[1]': 1149}})")
    wait_until(page, "document.querySelector('[data-badge]').dataset.total === '150'")
    assert page.evaluate(f"{GRAPH}.data[0].y.length") == 150
    page.evaluate(f"Plotly.relayout({GRAPH}, {{'xaxis.autorange': true}})")
    wait_until(page, "document.querySelector('[data-badge]').dataset.total === '20000'")

    # Live: new points are appended by polling since= (Plotly.extendTraces), no reload.
    before = page.evaluate(f"{GRAPH}.data[0].x.length")
    metric_store.ingest(run, [{"key": "loss", "value": 0.5, "step": 20_000 + i} for i in range(5)])
    wait_until(page, f"{GRAPH}.data[0].x.length === {before + 5}", timeout=15)
    assert page.evaluate(f"{GRAPH}.data[0].x.slice(-1)[0]") == 20_004

    page.check("[data-control=log]")
    assert page.evaluate(f"{GRAPH}.layout.yaxis.type") == "log"
    page.select_option("[data-control=xaxis]", "time")
    wait_until(page, f"{GRAPH}.layout.xaxis.type === 'date'")
    assert page.js_errors == []


@pytest.mark.django_db(transaction=True)
def test_it_uses_webgl_beyond_5000_points(page, log_in, owner, run):
    metric_store.ingest(run, [{"key": "acc", "value": (i * 7919) % 101, "step": i} for i in range(6_000)])
    log_in(owner)
    page.goto(f"/runs/{run.id}/")
    wait_until(page, "document.querySelector('.metric-chart[data-drawn=\"1\"]') !== null")
    # The page asks for about two points per pixel; a zoom to 6,000 raw points stays at full resolution.
    page.evaluate("document.querySelector('.metric-chart').chart.points = () => 8000")
    page.evaluate(f"Plotly.relayout({GRAPH}, {{'xaxis.range[0]': 0, 'xaxis.range[1]': 5998}})")
    wait_until(page, f"{GRAPH}.data[0].y.length === 5999")
    assert page.evaluate(f"{GRAPH}.data[0].type") == "scattergl"
    assert page.js_errors == []
