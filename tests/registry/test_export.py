import hashlib
import io
import os
import subprocess
import sys
from datetime import timedelta

import numpy as np
import onnxruntime
import pytest
import torch
from django.conf import settings

from config.testing import subprocess_database_url
from registry import services, tasks
from registry.models import ModelVersion, OnnxExport, TaskStatus
from tests.registry.conftest import add_artifact, digits_model, state_dict_bytes
from tracker import storage

pytestmark = pytest.mark.slow


def register_digits(run, owner, **extra):
    options = dict(
        path="outputs/model.pt", name="pt-dnn", user=owner, architecture="digits_model:DigitsCNN",
        arch_kwargs=["width=8"], input_shape="1,1,8,8",
    )
    options.update(extra)
    return services.register_from_run(run=run, **options)


def run_worker_burst(queue, redis_url):
    """A real RQ worker process (burst mode) on `queue`, seeing the test database."""
    code = (
        "import django,os;os.environ.setdefault('DJANGO_SETTINGS_MODULE','config.settings');django.setup();"
        "from rq import Worker;from config.redis import get_connection;"
        f"Worker([{queue!r}],connection=get_connection({redis_url!r})).work(burst=True)"
    )
    env = dict(os.environ)
    env["TORCHLIGHT_DATA_DIR"] = str(settings.DATA_DIR)
    env["DATABASE_URL"] = subprocess_database_url()
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.django_db(transaction=True)
def test_it_exports_a_registered_cnn_on_a_real_worker_with_parity(digits_run, owner, cluster, redis_conn, redis_url):
    version = register_digits(digits_run, owner)
    export = services.request_onnx_export(version=version, cluster=cluster, opset=17, user=owner)
    assert export.status == TaskStatus.QUEUED
    assert redis_conn.llen(f"rq:queue:{cluster.queue_name}") == 1
    run_worker_burst(cluster.queue_name, redis_url)

    export.refresh_from_db()
    assert export.status == TaskStatus.COMPLETED, export.message + export.log
    assert export.progress == 1.0
    assert "onnx.checker: passed" in export.log
    onnx_version = export.result_version
    assert onnx_version.version == 2
    assert onnx_version.flavour == "onnx" and onnx_version.framework == "onnx"
    assert onnx_version.source_version_id == version.pk
    assert onnx_version.run_id == digits_run.pk
    assert onnx_version.parity["max_abs_diff"] < 1e-4
    assert onnx_version.parity["passed"] is True
    assert onnx_version.parity["opset"] == 17
    assert onnx_version.parity["input_shape"] == [2, 1, 8, 8]
    # the source version is untouched
    source = ModelVersion.objects.get(pk=version.pk)
    assert source.flavour == "state_dict" and source.files.count() == 1

    # the ONNX file runs in onnxruntime with any batch size and matches the model
    f = onnx_version.files.get(path="model.onnx")
    with storage.open_blob(f.storage_key) as fh:
        data = fh.read()
    assert hashlib.sha256(data).hexdigest() == f.sha256
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = torch.rand(5, 1, 8, 8)
    model, _ = digits_model()
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(got - expected).max() < 1e-4

    # a second delivery of the same job does nothing
    assert tasks.export_onnx(export.pk) is None
    assert ModelVersion.objects.filter(model=version.model).count() == 2


@pytest.mark.django_db(transaction=True)
def test_it_fails_an_export_of_an_op_onnx_cannot_express_with_the_exporters_message(run, owner, cluster):
    _, namespace = digits_model()
    torch.manual_seed(0)
    model = namespace["EigModel"]()
    from tests.registry.conftest import DIGITS_SOURCE

    add_artifact(run, "code/digits_model.py", DIGITS_SOURCE.encode())
    add_artifact(run, "outputs/model.pt", state_dict_bytes(model))
    version = services.register_from_run(
        run=run, path="outputs/model.pt", name="eig", user=owner, architecture="digits_model:EigModel", input_shape=[1, 4]
    )
    export = OnnxExport.objects.create(source_version=version, cluster=cluster, opset=18, requested_by=owner)
    assert tasks.export_onnx(export.pk) is None
    export.refresh_from_db()
    assert export.status == TaskStatus.FAILED
    assert "torch.onnx.export failed" in export.message
    assert "eig" in export.message.lower()
    assert export.result_version is None
    assert ModelVersion.objects.filter(model=version.model).count() == 1


@pytest.mark.django_db(transaction=True)
def test_it_records_a_loader_failure_on_the_export(digits_run, owner, cluster):
    version = register_digits(digits_run, owner)
    # the run's source disappears after registration: the architecture cannot be imported any more
    digits_run.artifacts.filter(path__startswith="code/").delete()
    export = OnnxExport.objects.create(source_version=version, cluster=cluster, opset=18, requested_by=owner)
    tasks.export_onnx(export.pk)
    export.refresh_from_db()
    assert export.status == TaskStatus.FAILED
    assert "cannot import module 'digits_model'" in export.message


@pytest.mark.django_db
def test_it_keeps_an_export_queued_when_redis_is_down_and_resends_it_later(
    digits_run, owner, cluster, settings, django_capture_on_commit_callbacks, redis_conn, redis_url
):
    version = register_digits(digits_run, owner)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    with django_capture_on_commit_callbacks(execute=True):
        export = services.request_onnx_export(version=version, cluster=cluster, opset=18, user=owner)
    export.refresh_from_db()
    assert export.status == TaskStatus.QUEUED
    assert "could not be reached" in export.message
    # Redis is back: the reconciler's call sends it, once
    settings.REDIS_URL = redis_url
    OnnxExport.objects.filter(pk=export.pk).update(created_at=export.created_at - timedelta(minutes=5))
    assert services.resend_queued_tasks() == 1
    assert services.resend_queued_tasks() == 0
    assert redis_conn.llen(f"rq:queue:{cluster.queue_name}") == 1
    export.refresh_from_db()
    assert export.message == ""


@pytest.mark.django_db
def test_it_refuses_exports_it_cannot_do(digits_run, owner, cluster, other_workspace):
    from jobs.models import ComputeCluster

    version = register_digits(digits_run, owner, input_shape="")
    with pytest.raises(services.RegistrationError, match="no input signature"):
        services.request_onnx_export(version=version, cluster=cluster, user=owner)
    version = register_digits(digits_run, owner)
    foreign = ComputeCluster.objects.create(workspace=other_workspace, name="theirs")
    with pytest.raises(services.RegistrationError, match="cluster"):
        services.request_onnx_export(version=version, cluster=foreign, user=owner)
    with pytest.raises(services.RegistrationError, match="opset"):
        services.request_onnx_export(version=version, cluster=cluster, opset=99, user=owner)
    assert not OnnxExport.objects.exists()



@pytest.mark.django_db(transaction=True)
def test_it_never_loads_an_untrusted_pickle_in_the_worker_either(run, owner, cluster, tmp_path):
    from registry.models import ModelFile, RegisteredModel
    from tests.registry.test_register import marker_pickle

    marker = tmp_path / "pwned"
    blob = storage.save_stream(io.BytesIO(marker_pickle(marker)), kind="registry")
    # a row that could only exist if something bypassed register_version's refusal
    model = RegisteredModel.objects.create(workspace=run.experiment.workspace, name="evil")
    version = ModelVersion.objects.create(model=model, version=1, flavour="full_pickle", trusted=False, input_shape=[1, 4], run=run)
    ModelFile.objects.create(version=version, path="model.pt", size=blob.size, sha256=blob.sha256, storage_key=blob.key)
    with pytest.raises(services.RegistrationError, match="untrusted"):
        services.request_onnx_export(version=version, cluster=cluster, user=owner)
    export = OnnxExport.objects.create(source_version=version, cluster=cluster, opset=18)
    tasks.export_onnx(export.pk)
    export.refresh_from_db()
    assert export.status == TaskStatus.FAILED
    assert "only when the version is trusted" in export.message
    assert not marker.exists()


@pytest.mark.django_db
def test_it_fails_an_export_whose_worker_died(digits_run, owner, cluster, redis_conn):
    from django.utils import timezone

    version = register_digits(digits_run, owner)
    export = OnnxExport.objects.create(source_version=version, cluster=cluster, opset=18)
    assert export.claim()
    assert services.reconcile_tasks() == {"resent": 0, "failed": 0}
    OnnxExport.objects.filter(pk=export.pk).update(started_at=timezone.now() - timedelta(days=1))
    assert services.fail_lost_tasks() == 1
    export.refresh_from_db()
    assert export.status == TaskStatus.FAILED and "stopped answering" in export.message
    assert not export.complete(result_version=version)  # a late worker cannot overwrite it


@pytest.mark.django_db(transaction=True)
def test_it_counts_a_queued_export_as_work_waiting_for_a_node(digits_run, owner, cluster):
    # The supervisor scales a local cluster up on this count: an export must wake a node like a job does.
    version = register_digits(digits_run, owner)
    assert cluster.waiting_node_count() == 0
    export = OnnxExport.objects.create(source_version=version, cluster=cluster, opset=18, requested_by=owner)
    assert cluster.waiting_node_count() == 1
    OnnxExport.objects.filter(pk=export.pk).update(status=TaskStatus.RUNNING)
    assert cluster.waiting_node_count() == 0
