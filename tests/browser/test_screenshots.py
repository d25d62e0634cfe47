"""PNG screenshots of the main pages into docs/screenshots/ (`make screenshots`)."""

import os
from pathlib import Path

import pytest

from tests.browser.data import make_experiment

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
pytestmark = [pytest.mark.browser, pytest.mark.slow]


def wait_for_charts(page):
    page.wait_for_function(
        "() => document.querySelectorAll('.metric-chart').length === "
        "document.querySelectorAll('.metric-chart[data-drawn=\"1\"]').length",
        timeout=20_000,
    )
    page.wait_for_timeout(300)  # let plotly finish its transitions


@pytest.mark.django_db(transaction=True)
def test_it_writes_screenshots_of_the_main_pages(page, log_in, owner, workspace, tmp_path):
    # `make screenshots` refreshes docs/screenshots; the suite writes to a temp dir so the tree stays clean.
    SCREENSHOTS = DOCS_SCREENSHOTS if os.environ.get("TORCHLIGHT_WRITE_SCREENSHOTS") == "1" else tmp_path
    experiment, runs = make_experiment(workspace, owner, runs=4, steps=300)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    log_in(owner)
    shots = {
        "home": "/w/vision/",
        "experiments": "/w/vision/experiments/",
        "experiment": f"/experiments/{experiment.pk}/?metrics=train/loss,val/acc&params=lr,optimizer&sort=-metrics.val/acc",
        "run": f"/runs/{runs[1].id}/",
        "artifacts": f"/runs/{runs[1].id}/artifacts/?path=outputs/metrics.csv",
        "compare": "/compare/?runs=" + ",".join(str(r.id) for r in runs),
    }
    for name, url in shots.items():
        page.goto(url)
        wait_for_charts(page)
        if name == "compare":
            page.wait_for_selector('#parcoords[data-drawn="1"]')
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000, name
    assert page.js_errors == []
