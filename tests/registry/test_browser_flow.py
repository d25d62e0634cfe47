"""Register from the run page → export to ONNX on a real worker → download, in Debian's chromium."""

import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.conf import settings

from config.testing import subprocess_database_url
from registry.models import ModelVersion

CHROMIUM = "/usr/bin/chromium"
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is missing"),
]


@pytest.fixture
def page(live_server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        context = browser.new_context(base_url=live_server.url, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.js_errors = []
        page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
        yield page
        browser.close()


@pytest.fixture
def worker(cluster, redis_conn, redis_url):
    env = dict(os.environ, TORCHLIGHT_DATA_DIR=str(settings.DATA_DIR), DATABASE_URL=subprocess_database_url())
    code = (
        "import django,os;os.environ.setdefault('DJANGO_SETTINGS_MODULE','config.settings');django.setup();"
        "from rq import Worker;from config.redis import get_connection;"
        f"Worker([{cluster.queue_name!r}],connection=get_connection({redis_url!r})).work()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=settings.BASE_DIR)
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


def log_in(page, user):
    from tests.conftest import PASSWORD

    page.goto("/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login/" not in url)


def downloaded_bytes(page, selector):
    with page.expect_download() as info:
        page.click(selector)
    return Path(info.value.path()).read_bytes()


def test_it_registers_exports_and_downloads_in_the_browser(page, digits_run, owner, cluster, worker):
    log_in(page, owner)
    page.goto(f"/runs/{digits_run.id}/")
    panel = page.locator("#register-model")
    panel.locator('select[name="path"]').select_option("outputs/model.pt")
    panel.locator('input[name="name"]').fill("pt-dnn")
    panel.locator('input[name="architecture"]').fill("digits_model:DigitsCNN")
    panel.locator('input[name="arch_args"]').fill("width=8")
    panel.locator('input[name="input_shape"]').fill("1,1,8,8")
    panel.locator('button[type="submit"]').click()
    page.wait_for_url("**/models/*/versions/1/")
    version = ModelVersion.objects.get()
    model_file = version.files.get()
    assert page.locator("#file-table").inner_text().count(model_file.sha256) == 1

    data = downloaded_bytes(page, "#file-table a.button")
    assert hashlib.sha256(data).hexdigest() == model_file.sha256
    archive = zipfile.ZipFile(io.BytesIO(downloaded_bytes(page, "#download-zip")))
    assert hashlib.sha256(archive.read("model.pt")).hexdigest() == model_file.sha256

    page.locator('#export-form input[name="opset"]').fill("18")
    page.locator('#export-form button[type="submit"]').click()
    page.wait_for_selector('.export[data-status="completed"]', timeout=240_000)
    page.locator('.export [data-field="result"] a').click()
    page.wait_for_url("**/versions/2/")
    max_abs = float(page.locator("#parity-max-abs").inner_text())
    assert max_abs < 1e-4
    onnx_file = ModelVersion.objects.get(version=2).files.get(path="model.onnx")
    onnx_bytes = downloaded_bytes(page, "#file-table a.button")
    assert hashlib.sha256(onnx_bytes).hexdigest() == onnx_file.sha256

    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: np.random.rand(3, 1, 8, 8).astype(np.float32)})
    assert out.shape == (3, 10)
    assert page.js_errors == []
