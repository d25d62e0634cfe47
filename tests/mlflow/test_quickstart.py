"""The MLflow PyTorch quickstart, unchanged, against Torchlight: train, log, search, load, register, load again."""

import json

import mlflow
import mlflow.pytorch
import numpy as np
import pytest
import torch
from torch import nn

from registry.models import Flavour, ModelVersion
from tracker.models import Artifact, MetricSeries, Run, RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def make_images(n=64, seed=0):
    """Bright-centre vs dark-centre 8x8 images: a task a tiny CNN learns in a few batches."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 8, 8, generator=generator) * 0.3
    labels = torch.randint(0, 2, (n,), generator=generator)
    images[labels == 1, :, 2:6, 2:6] += 0.7
    return images, labels


def test_it_runs_the_pytorch_quickstart(tracking, tmp_path, owner, workspace):
    torch.manual_seed(0)
    images, labels = make_images()
    model = TinyCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss_fn = nn.CrossEntropyLoss()

    mlflow.set_experiment("quickstart")
    with mlflow.start_run(run_name="tiny-cnn") as active:
        mlflow.log_params({"epochs": 3, "lr": 0.5, "batch_size": 16})
        step = 0
        for _epoch in range(3):
            for start in range(0, len(images), 16):
                optimizer.zero_grad()
                loss = loss_fn(model(images[start : start + 16]), labels[start : start + 16])
                loss.backward()
                optimizer.step()
                if step % 2 == 0:
                    mlflow.log_metric("loss", loss.item(), step=step)
                step += 1
        summary = tmp_path / "summary.txt"
        summary.write_text(str(model))
        mlflow.log_artifact(str(summary))
        model.eval()
        example = images[:4].numpy()
        info = mlflow.pytorch.log_model(model, name="model", input_example=example)
    run_id = active.info.run_id

    # Ordinary Torchlight data: the run, its chart series, the browsable artifacts (summary + model files).
    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.COMPLETED and run.created_by == owner
    assert MetricSeries.objects.get(run=run, key="loss").count == 6
    paths = set(Artifact.objects.filter(run=run).values_list("path", flat=True))
    assert "summary.txt" in paths
    assert f"models/{info.model_id}/MLmodel" in paths

    found = mlflow.search_runs(filter_string="params.lr = '0.5'", output_format="list")
    assert [r.info.run_id for r in found] == [run_id]
    history = mlflow.MlflowClient().get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [0, 2, 4, 6, 8, 10]

    with torch.no_grad():
        expected = model(images[:4]).numpy()
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    np.testing.assert_allclose(np.asarray(loaded.predict(example)), expected, rtol=1e-5, atol=1e-5)

    first = mlflow.register_model(info.model_uri, "tiny-cnn")
    second = mlflow.register_model(f"runs:/{run_id}/model", "tiny-cnn")
    assert (first.version, second.version) == ("1", "2")
    versions = ModelVersion.objects.filter(model__workspace=workspace, model__name="tiny-cnn").order_by("version")
    assert [v.version for v in versions] == [1, 2]
    assert versions[1].run_id == run.pk
    assert versions[1].flavour in (Flavour.TORCH_EXPORT, Flavour.FULL_PICKLE)
    assert versions[1].input_shape == [1, 1, 8, 8]
    assert versions[1].can_export_onnx  # like any other version: flavour, trust and signature are recorded
    assert "MLmodel" in {f.path for f in versions[1].files.all()}

    reloaded = mlflow.pyfunc.load_model("models:/tiny-cnn/2")
    np.testing.assert_allclose(np.asarray(reloaded.predict(example)), expected, rtol=1e-5, atol=1e-5)
    torch_model = mlflow.pytorch.load_model("models:/tiny-cnn/1")
    with torch.no_grad():
        np.testing.assert_allclose(torch_model(images[:4]).numpy(), expected, rtol=1e-5, atol=1e-5)

    client = mlflow.MlflowClient()
    client.set_registered_model_alias("tiny-cnn", "champion", "2")
    assert client.get_model_version_by_alias("tiny-cnn", "champion").version == "2"
    assert client.get_registered_model("tiny-cnn").aliases == {"champion": "2"}
    assert json.loads(json.dumps(client.get_model_version("tiny-cnn", "2").source))


def test_it_uploads_and_downloads_a_nested_folder(tracking, tmp_path):
    source = tmp_path / "outputs"
    (source / "plots" / "deep").mkdir(parents=True)
    (source / "config.json").write_text('{"a": 1}')
    (source / "plots" / "loss.csv").write_text("step,loss\n0,1.0\n")
    (source / "plots" / "deep" / "weights.bin").write_bytes(bytes(range(256)) * 40)
    mlflow.set_experiment("artifacts")
    with mlflow.start_run() as active:
        mlflow.log_artifacts(str(source), artifact_path="outputs")
    run_id = active.info.run_id
    assert set(Artifact.objects.filter(run_id=run_id).values_list("path", flat=True)) == {
        "outputs/config.json", "outputs/plots/loss.csv", "outputs/plots/deep/weights.bin",
    }  # fmt: skip
    client = mlflow.MlflowClient()
    listing = client.list_artifacts(run_id, "outputs")
    assert [(f.path, f.is_dir) for f in listing] == [("outputs/config.json", False), ("outputs/plots", True)]
    target = tmp_path / "download"
    target.mkdir()
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="outputs", dst_path=str(target))
    assert (target / "outputs" / "plots" / "deep" / "weights.bin").read_bytes() == bytes(range(256)) * 40
    assert (target / "outputs" / "config.json").read_text() == '{"a": 1}'
    assert local.endswith("outputs")
