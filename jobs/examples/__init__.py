"""Built-in example jobs: folders of plain training code shipped with Torchlight.

Each example is a folder next to this file with an entry script; a job that
picks an example gets a copy of the folder as its source, exactly as if the
user had uploaded it. They run offline on CPU in seconds and use CUDA when
present, and log through `tracker.client`.
"""

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Example:
    name: str
    title: str
    description: str
    entry_script: str = "train.py"
    default_params: list = field(default_factory=list)  # [(name, value)] rows for the form

    @property
    def path(self):
        return EXAMPLES_DIR / self.name

    def files(self):
        """Relative POSIX paths of the example's files (caches skipped)."""
        return sorted(
            p.relative_to(self.path).as_posix()
            for p in self.path.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )

    def readme(self):
        readme = self.path / "README.md"
        return readme.read_text() if readme.exists() else ""

    def as_zip(self):
        """The example folder as .zip bytes, for users who want to edit and upload it."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in self.files():
                zf.write(self.path / name, name)
        return buf.getvalue()


EXAMPLES = {
    "digits": Example(
        name="digits",
        title="Digits CNN (scikit-learn's 1,797 8×8 digit images)",
        description="A small CNN image classifier; seconds on CPU. Logs loss/accuracy per step and eval metrics per epoch; "
        "saves outputs/model.pt and outputs/model_full.pt. Works with several processes or nodes (DDP).",
        default_params=[("--epochs", "3"), ("--lr", "0.001"), ("--batch-size", "64")],
    ),
    "transfer": Example(
        name="transfer",
        title="Transfer learning: ResNet-18 on an ImageFolder dataset",
        description="Fine-tunes torchvision's ResNet-18 on a dataset with train/ and val/ class folders (e.g. ants/bees). "
        "Uses pretrained weights only if they are already in the torch cache; never downloads.",
        default_params=[("--data", "data"), ("--epochs", "3"), ("--batch-size", "8")],
    ),
}


def get_example(name):
    """The Example called `name`, or None."""
    return EXAMPLES.get(name)


def example_choices():
    return [(example.name, example.title) for example in EXAMPLES.values()]
