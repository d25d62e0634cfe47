import hashlib
import io
import pickle

import pytest
import torch

from registry import services
from registry.models import ImmutableVersionError, ModelFile, ModelVersion, RegisteredModel
from registry.services import RegistrationError
from tests.registry.conftest import add_artifact, digits_model, state_dict_bytes
from tracker import storage
from tracker.models import Param

pytestmark = pytest.mark.django_db


def register_digits(run, owner, **extra):
    options = dict(
        path="outputs/model.pt", name="pt-dnn", user=owner, architecture="digits_model:DigitsCNN",
        arch_kwargs=["width=8"], input_shape="1,1,8,8",
    )
    options.update(extra)
    return services.register_from_run(run=run, **options)


def test_it_registers_a_state_dict_from_a_run_as_version_1(digits_run, owner):
    Param.objects.create(run=digits_run, key="torch_version", value="2.3.0")
    version = register_digits(digits_run, owner)
    assert version.version == 1
    assert version.model.name == "pt-dnn"
    assert version.flavour == "state_dict"
    assert version.framework == "pytorch"
    assert version.framework_version == "2.3.0"
    assert version.arch_kwargs == {"width": 8}
    assert version.input_shape == [1, 1, 8, 8]
    assert version.output_shape == [None, 10]
    (f,) = version.files.all()
    artifact = digits_run.artifacts.get(path="outputs/model.pt")
    assert f.path == "model.pt" and f.sha256 == artifact.sha256 and f.size == artifact.size
    assert f.storage_key != artifact.storage_key
    # deleting the run's artifact blob does not break the version
    storage.delete_blob(artifact.storage_key)
    with storage.open_blob(f.storage_key) as fh:
        assert hashlib.sha256(fh.read()).hexdigest() == f.sha256


def test_it_counts_versions_up_and_allows_identical_files(digits_run, owner):
    v1 = register_digits(digits_run, owner)
    v2 = register_digits(digits_run, owner)
    assert (v1.version, v2.version) == (1, 2)
    assert v1.files.get().sha256 == v2.files.get().sha256
    assert v1.files.get().storage_key != v2.files.get().storage_key


def test_it_registers_a_folder_prefix(digits_run, owner):
    version = register_digits(digits_run, owner, path="outputs/")
    assert sorted(version.files.values_list("path", flat=True)) == ["config.json", "model.pt"]


def test_it_defaults_the_framework_version_to_installed_torch(digits_run, owner):
    version = register_digits(digits_run, owner)
    assert version.framework_version == torch.__version__.split("+")[0]


@pytest.mark.parametrize(
    "path",
    ["../outputs/model.pt", "/etc/passwd", "outputs/../code/digits_model.py", "%2e%2e/outputs/model.pt",
     "outputs%2fmodel.pt", "outputs/missing.pt", "..%2F..%2Fetc%2Fpasswd", "outputs\\model.pt", ""],
)
def test_it_refuses_paths_outside_the_runs_artifacts(digits_run, owner, path):
    with pytest.raises(RegistrationError) as err:
        register_digits(digits_run, owner, path=path)
    assert err.value.status == 404
    assert not RegisteredModel.objects.exists()


@pytest.mark.parametrize(
    "data",
    [b"", b"<!doctype html><html><body>Not found</body></html>", None],
    ids=["zero-byte", "html", "truncated"],
)
def test_it_refuses_a_file_that_is_not_a_pytorch_file(run, owner, data):
    if data is None:
        model, _ = digits_model()
        data = state_dict_bytes(model)[:600]
    add_artifact(run, "outputs/model.pt", data)
    with pytest.raises(RegistrationError) as err:
        services.register_from_run(run=run, path="outputs/model.pt", name="m", user=owner)
    assert err.value.code == "not_pytorch_file"
    assert "not a PyTorch file" in err.value.message
    assert not ModelVersion.objects.exists()
    assert not ModelFile.objects.exists()


def test_it_lists_missing_and_unexpected_keys(run, owner):
    state = {"fc.weight": torch.zeros(2, 512), "fc.bias": torch.zeros(2), "extra.weight": torch.zeros(1)}
    buf = io.BytesIO()
    torch.save(state, buf)
    add_artifact(run, "outputs/model.pt", buf.getvalue())
    with pytest.raises(RegistrationError) as err:
        services.register_from_run(
            run=run, path="outputs/model.pt", name="m", user=owner,
            architecture="torchvision:resnet18", arch_kwargs={"num_classes": 2},
        )
    assert err.value.code == "key_mismatch"
    assert "missing keys: bn1.bias" in err.value.message
    assert "unexpected keys: extra.weight" in err.value.message
    assert "conv1.weight" in err.value.details["missing_keys"]
    assert not ModelVersion.objects.exists()


class WritesMarker:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def marker_pickle(marker):
    buf = io.BytesIO()
    torch.save({"model": WritesMarker(str(marker))}, buf)
    return buf.getvalue()


def test_it_refuses_an_untrusted_full_pickle_without_loading_it(run, owner, tmp_path):
    marker = tmp_path / "pwned"
    add_artifact(run, "outputs/model.pt", marker_pickle(marker))
    with pytest.raises(RegistrationError) as err:
        services.register_from_run(run=run, path="outputs/model.pt", name="m", user=owner, flavour="full_pickle")
    assert err.value.code == "untrusted_pickle"
    assert not marker.exists()
    # registered as a "state dict", the weights-only loader refuses to run it either
    with pytest.raises(RegistrationError) as err:
        services.register_from_run(run=run, path="outputs/model.pt", name="m", user=owner)
    assert err.value.code == "not_a_state_dict"
    assert not marker.exists()
    assert not ModelVersion.objects.exists()


def test_it_refuses_unknown_architectures_and_bad_signatures(digits_run, owner):
    with pytest.raises(RegistrationError) as err:
        register_digits(digits_run, owner, architecture="torchvision:not_a_model")
    assert err.value.code == "architecture_error"
    with pytest.raises(RegistrationError) as err:
        register_digits(digits_run, owner, input_shape="1,3,8,8")
    assert err.value.code == "signature_error"
    with pytest.raises(RegistrationError) as err:
        register_digits(digits_run, owner, input_shape="1,a,8")
    assert err.value.code == "invalid_input_shape"
    assert not ModelVersion.objects.exists()


def test_it_keeps_versions_immutable(digits_run, owner):
    version = register_digits(digits_run, owner)
    version.description = "fine"
    version.save()
    version.architecture = "torchvision:resnet18"
    with pytest.raises(ImmutableVersionError):
        version.save()
    with pytest.raises(ImmutableVersionError):
        version.save(update_fields=["architecture"])
    f = version.files.get()
    f.sha256 = "0" * 64
    with pytest.raises(ImmutableVersionError):
        f.save()
    version.refresh_from_db()
    assert version.architecture == "digits_model:DigitsCNN" and version.description == "fine"


def test_it_registers_an_upload(workspace, owner, tmp_path):
    model, _ = digits_model()
    scripted = torch.jit.trace(model, torch.rand(1, 1, 8, 8))
    path = tmp_path / "digits.pt"
    scripted.save(str(path))
    from django.core.files.uploadedfile import SimpleUploadedFile

    with open(path, "rb") as fh:
        upload = SimpleUploadedFile("digits.pt", fh.read())
    version = services.register_from_upload(
        workspace=workspace, name="uploaded", user=owner, uploaded_file=upload, flavour="torchscript", input_shape=[1, 1, 8, 8]
    )
    assert version.flavour == "torchscript" and version.run is None
    assert version.files.get().path == "digits.pt"


def test_it_deletes_stored_files_with_the_model(digits_run, owner, django_capture_on_commit_callbacks):
    version = register_digits(digits_run, owner)
    key = version.files.get().storage_key
    assert storage.blob_exists(key)
    with django_capture_on_commit_callbacks(execute=True):
        services.delete_model(model=version.model)
    assert not storage.blob_exists(key)
    assert not ModelFile.objects.exists()


def test_it_records_alias_moves(digits_run, owner):
    v1 = register_digits(digits_run, owner)
    v2 = register_digits(digits_run, owner)
    model = v1.model
    services.set_alias(model=model, alias="production", version=v1, user=owner)
    services.set_alias(model=model, alias="production", version=v2, user=owner)
    services.delete_alias(model=model, alias="production", user=owner)
    events = [(e.action, e.from_version, e.to_version) for e in model.alias_events.order_by("pk")]
    assert events == [("set", None, 1), ("moved", 1, 2), ("deleted", 2, None)]
    with pytest.raises(RegistrationError):
        services.set_alias(model=model, alias="v3", version=v1)


def test_pickle_helper_really_writes_the_marker(tmp_path):
    # guards the marker tests: loading this pickle for real does write the file
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(WritesMarker(str(marker))))
    assert marker.exists()


def test_it_builds_module_architectures_from_the_bundled_example_the_run_used(run, owner):
    import importlib.util
    import sys
    from pathlib import Path

    from django.conf import settings

    from tracker.models import RunTag

    spec = importlib.util.spec_from_file_location("digits_example_model", Path(settings.BASE_DIR) / "jobs/examples/digits/model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["digits_example_model"] = module
    spec.loader.exec_module(module)
    model = module.DigitsCNN()
    RunTag.objects.create(run=run, key="torchlight.example", value="digits")
    add_artifact(run, "outputs/model.pt", state_dict_bytes(model))
    version = services.register_from_run(
        run=run, path="outputs/model.pt", name="pt-dnn", user=owner, architecture="model:DigitsCNN", input_shape="1,1,8,8"
    )
    assert version.output_shape == [None, 10]


def test_it_validates_in_a_plain_subprocess_when_the_warm_loader_is_off(digits_run, owner, monkeypatch):
    from registry import conf

    monkeypatch.setattr(conf, "USE_ZYGOTE", False)
    version = register_digits(digits_run, owner)
    assert version.output_shape == [None, 10]
    digits_run.artifacts.filter(path="outputs/model.pt").delete()
    add_artifact(digits_run, "outputs/model.pt", state_dict_bytes(digits_model()[0])[:700])
    with pytest.raises(RegistrationError, match="not a PyTorch file"):
        register_digits(digits_run, owner)
