"""The digits classifier: importable as `model:DigitsCNN` so the registry can rebuild it from a state_dict."""

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Two 3×3 convolutions, max-pooling and two linear layers, for 1×8×8 images in [0, 1]."""

    def __init__(self, num_classes=10, width=32, dropout=0.25):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 4 * 4, 128),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))

    @staticmethod
    def example_input(batch=1):
        """A sample input of the right shape (for ONNX export checks)."""
        return torch.rand(batch, 1, 8, 8)
