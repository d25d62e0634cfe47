import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from registry import services, tasks
from registry.models import InferenceRequest, TaskStatus
from tracker import storage

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture
def version(digits_run, owner):
    return services.register_from_run(
        run=digits_run, path="outputs/model.pt", name="pt-dnn", user=owner, validate=False,
        architecture="digits_model:DigitsCNN", arch_kwargs={"width": 8}, input_shape=[1, 1, 8, 8],
    )


def png_bytes(size=(32, 20)):
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_it_runs_try_it_on_a_worker_for_an_image_and_a_json_tensor(version, owner, cluster, login, redis_conn):
    client = login(owner)
    response = client.post(
        f"/models/{version.model_id}/versions/1/try/",
        {"input": SimpleUploadedFile("digit.png", png_bytes()), "cluster": cluster.pk},
    )
    assert response.status_code == 302
    image_request = InferenceRequest.objects.get()
    assert image_request.status == TaskStatus.QUEUED and image_request.input_kind == "image"
    tasks.run_inference(image_request.pk)
    image_request.refresh_from_db()
    assert image_request.status == TaskStatus.COMPLETED, image_request.message
    assert image_request.result["input_shape"] == [1, 1, 8, 8]  # resized to the signature, grey for 1 channel
    top = image_request.result["top"]
    assert len(top) == 5 and abs(sum(r["score"] for r in top) - 1) < 1 and top[0]["score"] >= top[-1]["score"]
    assert not storage.blob_exists(image_request.input_key)  # the upload is removed once used

    tensor = json.dumps([[[0.5] * 8] * 8]).encode()
    json_request = services.request_inference(
        version=version, cluster=cluster, upload=SimpleUploadedFile("x.json", tensor), user=owner
    )
    tasks.run_inference(json_request.pk)
    json_request.refresh_from_db()
    assert json_request.status == TaskStatus.COMPLETED, json_request.message
    assert json_request.result["output_shape"] == [1, 10]
    status = client.get(f"/models/{version.model_id}/tries/{json_request.pk}.json").json()
    assert status["status"] == "completed" and len(status["result"]["top"]) == 5


def test_it_fails_try_it_with_a_clear_message_for_a_wrong_shape(version, owner, cluster):
    bad = services.request_inference(
        version=version, cluster=cluster, upload=SimpleUploadedFile("x.json", b"[[1, 2, 3]]"), user=owner
    )
    tasks.run_inference(bad.pk)
    bad.refresh_from_db()
    assert bad.status == TaskStatus.FAILED
    assert "the signature is ['batch', 1, 8, 8]" in bad.message
