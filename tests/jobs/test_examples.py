"""The built-in examples train offline on CPU in a subprocess and write their outputs."""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from jobs.examples import EXAMPLES, get_example
from jobs.source_archive import validate_source

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "jobs" / "examples"


def run_script(args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHLIGHT_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def make_imagefolder(root, classes=("ants", "bees"), per_class=(4, 2)):
    """A tiny ImageFolder dataset of synthetic images: each class has its own colour, so it is learnable."""
    colours = {name: (60 + 150 * i, 200 - 150 * i, 90) for i, name in enumerate(classes)}
    for split, count in zip(("train", "val"), per_class, strict=True):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True)
            for n in range(count):
                image = Image.new("RGB", (40, 40), colours[name])
                image.putpixel((n, n), (255, 255, 255))
                image.save(folder / f"{n}.jpg")


def test_it_describes_each_example_with_an_entry_script_and_a_readme():
    for example in EXAMPLES.values():
        assert example.entry_script in example.files()
        assert "model.py" in example.files()
        assert example.readme().startswith("# ")
    assert get_example("nope") is None


def test_it_serves_an_example_as_a_zip_that_passes_the_source_checks():
    data = get_example("digits").as_zip()
    files = validate_source(io.BytesIO(data), "digits.zip")
    assert "train.py" in files and "model.py" in files and not any("__pycache__" in f for f in files)


@pytest.mark.slow
def test_it_trains_the_digits_example_for_one_epoch_and_saves_both_models(tmp_path):
    script = EXAMPLES_DIR / "digits" / "train.py"
    result = run_script([sys.executable, str(script), "--epochs", "1"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tracking: off" in result.stdout
    assert "epoch 1/1" in result.stdout
    state = torch.load(tmp_path / "outputs" / "model.pt", weights_only=True)
    sys.path.insert(0, str(EXAMPLES_DIR / "digits"))
    try:
        from model import DigitsCNN

        model = DigitsCNN()
        model.load_state_dict(state)  # the registry rebuilds it as model:DigitsCNN
        full = torch.load(tmp_path / "outputs" / "model_full.pt", weights_only=False)
        assert type(full).__name__ == "DigitsCNN"
        sample = DigitsCNN.example_input(3)
        model.eval()
        full.eval()
        assert torch.allclose(model(sample), full(sample))
    finally:
        sys.path.remove(str(EXAMPLES_DIR / "digits"))
        sys.modules.pop("model", None)
    assert (tmp_path / "outputs" / "checkpoint.pt").exists()

    # Two processes with DDP over gloo, resuming from the first run's checkpoint.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    result = run_script(
        [*torchrun, str(script), "--epochs", "1", "--resume", str(tmp_path / "outputs" / "checkpoint.pt")], cwd=resumed
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "with 2 process(es)" in result.stdout
    assert "resumed from" in result.stdout and "epoch 2/2" in result.stdout
    assert torch.load(resumed / "outputs" / "checkpoint.pt", weights_only=True)["epoch"] == 2


@pytest.mark.slow
def test_it_fine_tunes_resnet18_on_a_tiny_imagefolder_zip_without_downloading(tmp_path):
    data = tmp_path / "dataset"
    make_imagefolder(data)
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as archive:
        for path in data.rglob("*"):
            archive.write(path, Path("birds") / path.relative_to(data))  # one top folder, as zips of folders have
    env_home = tmp_path / "torch-home"  # an empty torch cache: must train from scratch, never download
    script = EXAMPLES_DIR / "transfer" / "train.py"
    args = [sys.executable, str(script), "--data", "data.zip", "--epochs", "1", "--image-size", "32", "--batch-size", "4"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHLIGHT_")}
    env.update(TORCH_HOME=str(env_home), PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training from scratch" in result.stdout
    assert "epoch 1/1" in result.stdout
    assert not env_home.exists() or not any(env_home.rglob("*.pth"))
    assert json.loads((tmp_path / "outputs" / "classes.json").read_text()) == ["ants", "bees"]
    sys.path.insert(0, str(EXAMPLES_DIR / "transfer"))
    try:
        from model import TransferResNet

        model = TransferResNet(num_classes=2)
        model.load_state_dict(torch.load(tmp_path / "outputs" / "model.pt", weights_only=True))
    finally:
        sys.path.remove(str(EXAMPLES_DIR / "transfer"))
        sys.modules.pop("model", None)


@pytest.mark.slow
def test_it_says_what_is_missing_when_the_dataset_is_not_there(tmp_path):
    result = run_script([sys.executable, str(EXAMPLES_DIR / "transfer" / "train.py"), "--data", "nothing"], cwd=tmp_path)
    assert result.returncode == 1
    assert "no ImageFolder dataset at 'nothing'" in result.stderr
