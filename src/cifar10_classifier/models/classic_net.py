"""The classic Keras-tutorial CIFAR-10 CNN, kept faithful: blocks of conv -> BN (after every conv) -> max-pool
with dropout, flatten, a dense layer with BN and dropout, and a 10-way head (softmax lives in the loss)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from cifar10_classifier.models import register_model


@dataclass(frozen=True)
class ClassicNetConfig:
    widths: tuple[int, ...] = (32, 64, 128)
    block_dropout: tuple[float, ...] = (0.2, 0.3, 0.4)
    dense_width: int = 128
    dense_dropout: float = 0.5
    num_classes: int = 10


class ClassicNet(nn.Module):
    def __init__(self, config: ClassicNetConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        in_channels = 3
        for width, dropout in zip(config.widths, config.block_dropout, strict=True):
            for _ in range(2):
                layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(width)]
                in_channels = width
            layers += [nn.MaxPool2d(2), nn.Dropout(dropout)]
        self.features = nn.Sequential(*layers)
        spatial = 32 // 2 ** len(config.widths)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * spatial * spatial, config.dense_width),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(config.dense_width),
            nn.Dropout(config.dense_dropout),
            nn.Linear(config.dense_width, config.num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) -> logits (B, 10)
        return self.head(self.features(x))

    def inference_form(self) -> nn.Module:
        """Itself in eval mode: BN sits after ReLU here, so it has no conv to fold into (ONNX Runtime fuses it)."""
        return copy.deepcopy(self).eval()


@register_model("classic-net", ClassicNetConfig)
def build_classic_net(config: ClassicNetConfig) -> ClassicNet:
    return ClassicNet(config)
