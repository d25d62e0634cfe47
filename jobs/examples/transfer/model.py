"""ResNet-18 with a new classification head: `model:build_model(num_classes)` rebuilds the architecture."""

from pathlib import Path

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18
from torchvision.models.resnet import BasicBlock, ResNet


def cached_weights_path():
    """Where torch.hub keeps the ImageNet ResNet-18 weights; they are used only if already there."""
    filename = ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def build_model(num_classes, pretrained=True):
    """(model, note): ResNet-18 with a `num_classes` head; ImageNet weights from the local cache when present."""
    model = resnet18(weights=None)
    note = "no pretrained weights in the torch cache: training from scratch"
    weights = cached_weights_path()
    if pretrained and weights.exists():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        note = f"using pretrained ImageNet weights from {weights}"
    elif not pretrained:
        note = "pretrained weights turned off: training from scratch"
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model, note


class TransferResNet(ResNet):
    """ResNet-18 for `num_classes` classes (`model:TransferResNet`): loads the saved outputs/model.pt as is."""

    def __init__(self, num_classes=2):
        super().__init__(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
