"""Registry test helpers: runs with real artifacts in storage, small real models."""

import io
import textwrap

import pytest

from tracker import storage
from tracker.models import Artifact

DIGITS_SOURCE = textwrap.dedent(
    '''
    import torch
    from torch import nn


    class DigitsCNN(nn.Module):
        def __init__(self, num_classes=10, width=8):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            )
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(width * 4 * 4, num_classes))

        def forward(self, x):
            return self.classifier(self.features(x))


    class EigModel(nn.Module):
        """Uses an op ONNX cannot express (complex eigenvalues)."""

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            m = self.lin(x).reshape(-1, 2, 2)
            return torch.linalg.eigvals(m).real.reshape(x.shape[0], -1)
    '''
)


def add_artifact(run, path, data):
    blob = storage.save_stream(io.BytesIO(data))
    return Artifact.objects.create(run=run, path=path, size=blob.size, sha256=blob.sha256, storage_key=blob.key)


def state_dict_bytes(model):
    import torch

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def digits_model(width=8, seed=0):
    import torch

    namespace = {}
    exec(DIGITS_SOURCE, namespace)  # the same source the run logged under code/
    torch.manual_seed(seed)
    return namespace["DigitsCNN"](width=width).eval(), namespace


@pytest.fixture
def digits_run(run):
    """A run that logged its source under code/ and a DigitsCNN state dict at outputs/model.pt."""
    model, _ = digits_model()
    add_artifact(run, "code/digits_model.py", DIGITS_SOURCE.encode())
    add_artifact(run, "outputs/model.pt", state_dict_bytes(model))
    add_artifact(run, "outputs/config.json", b'{"width": 8}')
    return run


@pytest.fixture(scope="session", autouse=True)
def stop_warm_loader_at_the_end():
    """The registry's warm loader outlives a test; stop the one these tests started."""
    yield
    from registry.workdir import stop_loader

    stop_loader()


@pytest.fixture
def cluster(workspace):
    from jobs.models import ComputeCluster

    return ComputeCluster.objects.create(workspace=workspace, name="local")
