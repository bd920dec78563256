"""The in-memory dataset every job works from: uint8 images (N, 32, 32, 3) and int64 labels per split."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cifar10_classifier import CLASSES


@dataclass(frozen=True)
class Split:
    images_uint8: np.ndarray  # (N, 32, 32, 3) uint8, possibly memory-mapped
    labels: np.ndarray  # (N,) int64 class indices into CLASSES

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def counts_per_class(self) -> dict[str, int]:
        counts = np.bincount(np.asarray(self.labels), minlength=len(CLASSES))
        return {name: int(count) for name, count in zip(CLASSES, counts, strict=True)}


@dataclass(frozen=True)
class Dataset:
    train: Split
    test: Split
    source: str  # what the user passed
    checksum: str  # sha256 of the source: the cache key, recorded in model cards
    skipped_images: list[str] = field(default_factory=list)  # with --skip-bad-images
    skip_bad_images: bool = False  # decoded skipping the images that do not decode: other arrays, same checksum
