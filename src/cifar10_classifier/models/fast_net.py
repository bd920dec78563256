"""A small VGG-like net in the style of the fastest public CIFAR-10 trainings (airbench, hlb-CIFAR10).

A frozen 2x2 patch-whitening conv initialised from the data, then three blocks of
conv -> max-pool -> BN (no learned scale) -> activation -> conv -> BN -> activation, a global max-pool and a
linear head. BN without a learned scale has a positive per-channel scale, so it commutes with max-pooling and
folds into the conv before it at export time: the exported graph is conv -> ReLU -> pool, which ONNX Runtime
fuses into its int8 convolutions.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F

from cifar10_classifier.models import register_model


@dataclass(frozen=True)
class FastNetConfig:
    widths: tuple[int, int, int] = (64, 256, 256)
    whiten_kernel: int = 2
    whiten_width: int = 24  # 2 x (3 * kernel^2): each eigenvector and its negative, so ReLU keeps both signs
    # Added to the patch eigenvalues before scaling by 1/sqrt: it caps how much the weakest directions (the finest
    # colour detail, which JPEG's chroma subsampling has mostly replaced by noise) are amplified.
    whiten_eps: float = 5e-4
    activation: str = "relu"  # "relu" fuses into int8 convs in ONNX Runtime; "gelu" is airbench's choice
    batchnorm_momentum: float = 0.4  # PyTorch convention: weight of the new batch statistics
    logit_scale: float = 1 / 9  # airbench's output temperature, tuned with label smoothing
    num_classes: int = 10


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class ScaleFreeBatchNorm(nn.BatchNorm2d):
    """BN whose scale is fixed at 1 (only the shift is learned): fewer parameters, and it folds through pooling."""

    def __init__(self, channels: int, momentum: float):
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(False)


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, config: FastNetConfig):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding="same", bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = ScaleFreeBatchNorm(out_channels, config.batchnorm_momentum)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding="same", bias=False)
        self.norm2 = ScaleFreeBatchNorm(out_channels, config.batchnorm_momentum)
        self.act = _ACTIVATIONS[config.activation]()
        for conv in (self.conv1, self.conv2):
            # Identity init on the first in_channels filters: the block starts close to a pass-through,
            # which lets a short schedule train all layers at once.
            weight = conv.weight.data
            torch.nn.init.dirac_(weight[: weight.size(1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H/2, W/2)
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    def __init__(self, config: FastNetConfig):
        super().__init__()
        self.config = config
        self.whiten = nn.Conv2d(3, config.whiten_width, config.whiten_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.act = _ACTIVATIONS[config.activation]()
        w1, w2, w3 = config.widths
        self.blocks = nn.Sequential(
            ConvBlock(config.whiten_width, w1, config), ConvBlock(w1, w2, config), ConvBlock(w2, w3, config)
        )
        self.head = nn.Linear(w3, config.num_classes, bias=False)

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor) -> None:
        """Set the frozen first conv to the ZCA-like eigenbasis of the data's patches (images: (N, 3, H, W))."""
        k = self.config.whiten_kernel
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # (N, 3, H', W', k, k)
        patches = patches.transpose(1, 3).reshape(-1, 3 * k * k)  # (N * W' * H', 3 k k) in (C, kh, kw) order
        patches = patches - patches.mean(dim=0)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + self.config.whiten_eps)[:, None]).reshape(-1, 3, k, k)
        half = self.config.whiten_width // 2
        self.whiten.weight.copy_(torch.cat([filters[-half:], -filters[-half:]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) normalized -> logits (B, 10)
        x = self.act(self.whiten(x))  # (B, 24, 31, 31)
        x = self.blocks(x)  # (B, w3, 3, 3)
        x = F.adaptive_max_pool2d(x, 1).flatten(1)  # (B, w3)
        return self.head(x) * self.config.logit_scale

    def inference_form(self) -> nn.Module:
        """The same function with every BN folded into the conv before it: conv -> ReLU -> pool -> conv -> ReLU,
        which ONNX Runtime fuses into its int8 convolutions."""
        return FoldedFastNet(self)


def fold_batchnorm(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """conv then BN (inference statistics) as one conv. A non-positive BN scale cannot be moved through the
    max-pool that sits between them: ValueError."""
    assert norm.running_var is not None and norm.running_mean is not None and norm.bias is not None
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # (C,)
    if (scale <= 0).any():
        raise ValueError("a batch-norm scale is not positive; it cannot be folded through max-pooling")
    padding = cast("str | tuple[int, int]", conv.padding)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size[0], padding=padding, bias=True)
    fused.weight.data = conv.weight.data * scale[:, None, None, None]
    conv_bias = conv.bias.data if conv.bias is not None else torch.zeros_like(norm.running_mean)
    assert fused.bias is not None
    fused.bias.data = (conv_bias - norm.running_mean) * scale + norm.bias.data
    return fused


class FoldedBlock(nn.Module):
    """A ConvBlock with BN folded into the convs: conv -> act -> pool -> conv -> act (ReLU commutes with max-pool,
    and scale-free BN has a positive scale, so the order change is exact)."""

    def __init__(self, block: ConvBlock):
        super().__init__()
        self.conv1 = fold_batchnorm(block.conv1, block.norm1)
        self.conv2 = fold_batchnorm(block.conv2, block.norm2)
        self.relu = isinstance(block.act, nn.ReLU)
        self.act = block.act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_pooled(x)[0]

    def forward_with_pooled(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (the block's output, the pooled activation of its first conv: (B, C, H/2, W/2))."""
        x = F.max_pool2d(self.act(self.conv1(x)), 2) if self.relu else self.act(F.max_pool2d(self.conv1(x), 2))
        return self.act(self.conv2(x)), x


class FoldedFastNet(nn.Module):
    """FastNet's inference form: folded blocks, and the logit scale inside the head's weights."""

    def __init__(self, model: FastNet):
        super().__init__()
        self.whiten = copy.deepcopy(model.whiten)
        self.act = model.act
        self.blocks = nn.Sequential(*[FoldedBlock(block) for block in model.blocks if isinstance(block, ConvBlock)])
        self.head = nn.Linear(model.head.in_features, model.head.out_features, bias=False)
        self.head.weight.data = model.head.weight.data * model.config.logit_scale

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, w3): what the head sees
        x = self.blocks(self.act(self.whiten(x)))
        return torch.amax(x, dim=(2, 3))

    def features_and_statistics(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (features, layer statistics (B, w1 + w2)): the channel means of the first two blocks' pooled
        activations. Textures and edges any image has, in the proportions CIFAR-10's have: what the
        off-distribution score measures (export.served_outputs). Global average pools, which ONNX Runtime runs on
        the int8 activations directly."""
        x = self.act(self.whiten(x))
        means = []
        for index, block in enumerate(self.blocks):
            x, pooled = block.forward_with_pooled(x)  # type: ignore[operator]
            if index < 2:
                means.append(F.adaptive_avg_pool2d(pooled, 1).flatten(1))
        return torch.amax(x, dim=(2, 3)), torch.cat(means, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("fast-net", FastNetConfig)
def build_fast_net(config: FastNetConfig) -> FastNet:
    return FastNet(config)
