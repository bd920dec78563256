"""uint8 images -> the normalized float tensor the network trains on: the torch twin of preprocess.normalize."""

from __future__ import annotations

import numpy as np
import torch

from cifar10_classifier.preprocess import MEAN_RGB, STD_RGB


def normalized_tensor(images_uint8: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 (N, 32, 32, 3) -> float32 (N, 3, 32, 32) normalized with the training mean/std (same as preprocess)."""
    # A copy: the cache is memory-mapped read-only, and torch wants a writable buffer.
    images = torch.from_numpy(np.array(images_uint8, dtype=np.uint8, copy=True)).to(device)
    mean = torch.tensor(MEAN_RGB, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD_RGB, device=device).view(1, 3, 1, 1)
    images = (images.permute(0, 3, 1, 2).float() - mean) / std
    return images.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
