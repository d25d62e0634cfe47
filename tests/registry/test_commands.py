import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from config.testing import subprocess_database_url
from registry.models import ModelVersion, OnnxExport

pytestmark = pytest.mark.django_db


def test_it_registers_from_the_command_line(digits_run, capsys):
    call_command(
        "register_model", "--run", str(digits_run.id), "--path", "outputs/model.pt", "--name", "pt-dnn",
        "--arch", "digits_model:DigitsCNN", "--arch-arg", "width=8", "--input-shape", "1,1,8,8", "--description", "cli",
    )
    out = capsys.readouterr().out
    version = ModelVersion.objects.get()
    assert f"Registered pt-dnn version 1 (state_dict, {version.total_size} bytes" in out
    assert version.arch_kwargs == {"width": 8} and version.description == "cli"


def test_it_fails_the_command_on_bad_input(digits_run):
    with pytest.raises(CommandError, match="no artifact"):
        call_command("register_model", "--run", str(digits_run.id), "--path", "../x.pt", "--name", "m")
    with pytest.raises(CommandError, match="no run"):
        call_command("register_model", "--run", "not-a-uuid", "--path", "outputs/model.pt", "--name", "m")
    with pytest.raises(CommandError, match="no run"):
        call_command("register_model", "--run", str(digits_run.id), "--path", "outputs/model.pt", "--name", "m", "--workspace", "other")
    with pytest.raises(CommandError, match="full pickle"):
        call_command("register_model", "--run", str(digits_run.id), "--path", "outputs/model.pt", "--name", "m", "--flavour", "full_pickle")
    with pytest.raises(CommandError, match="no registered model"):
        call_command("export_onnx", "nope", "1")
    assert not ModelVersion.objects.exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_exports_from_the_command_line_and_waits_for_a_real_worker(digits_run, cluster, redis_conn, redis_url, capsys):
    call_command(
        "register_model", "--run", str(digits_run.id), "--path", "outputs/model.pt", "--name", "pt-dnn",
        "--arch", "digits_model:DigitsCNN", "--arch-arg", "width=8", "--input-shape", "1,1,8,8",
    )
    env = dict(os.environ, TORCHLIGHT_DATA_DIR=str(settings.DATA_DIR), DATABASE_URL=subprocess_database_url())
    code = (
        "import django,os;os.environ.setdefault('DJANGO_SETTINGS_MODULE','config.settings');django.setup();"
        "from rq import Worker;from config.redis import get_connection;"
        f"Worker([{cluster.queue_name!r}],connection=get_connection({redis_url!r})).work()"
    )
    worker = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=settings.BASE_DIR)
    try:
        call_command("export_onnx", "pt-dnn", "1", "--opset", "18", "--wait", "--timeout", "300")
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    out = capsys.readouterr().out
    export = OnnxExport.objects.get()
    assert "to ONNX version 2 (opset 18" in out
    assert "parity passed" in out
    assert export.result_version.parity["max_abs_diff"] < 1e-4
