"""Register from the run page → export to ONNX on a real worker → download, in Debian's chromium."""

import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.conf import settings

from config.testing import subprocess_env
from registry.models import ModelVersion

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.slow,
]


@pytest.fixture
def worker(cluster, redis_conn, redis_url):
    env = subprocess_env()
    code = (
        "import django,os;os.environ.setdefault('DJANGO_SETTINGS_MODULE','config.settings');django.setup();"
        "from rq import Worker;from config.redis import get_connection;"
        f"Worker([{cluster.queue_name!r}],connection=get_connection({redis_url!r})).work()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=settings.BASE_DIR)
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


def downloaded_bytes(page, selector):
    with page.expect_download() as info:
        page.click(selector)
    return Path(info.value.path()).read_bytes()


def test_it_registers_exports_and_downloads_in_the_browser(page, log_in, digits_run, owner, cluster, worker):
    log_in(owner)
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
