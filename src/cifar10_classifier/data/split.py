"""A seeded, stratified train/validation split: the same seed gives the same indices."""

from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """-> (train_indices, val_indices), each sorted. Every class gives round(fraction * its count) to val."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    generator = np.random.default_rng(seed)
    train_parts, val_parts = [], []
    for class_index in np.unique(labels):
        members = np.flatnonzero(labels == class_index)
        members = members[generator.permutation(len(members))]
        n_val = round(val_fraction * len(members))
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    train_indices = np.sort(np.concatenate(train_parts)) if train_parts else np.zeros(0, dtype=np.int64)
    val_indices = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, dtype=np.int64)
    return train_indices.astype(np.int64), val_indices.astype(np.int64)
