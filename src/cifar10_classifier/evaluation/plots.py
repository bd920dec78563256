"""Figures a person looks at: training curves, the confusion matrix, the reliability diagram, the most confident
mistakes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np

from cifar10_classifier import CLASSES
from cifar10_classifier.atomic import atomic_path


def _save(figure, path: Path) -> None:
    with atomic_path(path) as temp_path:
        figure.savefig(temp_path, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_curves(history: list[dict], path: Path) -> None:
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    accuracy_axis.plot(epochs, [r["train_accuracy"] for r in history], "o-", label="train")
    if any(r.get("val_loss") is not None for r in history):
        loss_axis.plot(epochs, [r["val_loss"] for r in history], "s-", label="validation")
        accuracy_axis.plot(epochs, [r["val_accuracy"] for r in history], "s-", label="validation")
    loss_axis.set(title="Loss per epoch", xlabel="epoch", ylabel="cross-entropy")
    accuracy_axis.set(title="Accuracy per epoch", xlabel="epoch", ylabel="accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    _save(figure, path)


def plot_confusion(matrix: np.ndarray, path: Path) -> None:
    normalized = matrix / np.maximum(1, matrix.sum(axis=1, keepdims=True))
    figure, axis = plt.subplots(figsize=(7.5, 6.5))
    image = axis.imshow(normalized, cmap="Blues", vmin=0, vmax=1)
    axis.set_xticks(range(len(CLASSES)), CLASSES, rotation=45, ha="right")
    axis.set_yticks(range(len(CLASSES)), CLASSES)
    axis.set(xlabel="predicted", ylabel="true", title="Confusion matrix (rows normalized)")
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            value = normalized[i, j]
            axis.text(
                j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white" if value > 0.5 else "black"
            )
    figure.colorbar(image, ax=axis, fraction=0.046)
    _save(figure, path)


def plot_mistakes(images_uint8: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, path: Path) -> None:
    count = len(labels)
    columns = 5
    rows = max(1, -(-count // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 2.1, rows * 2.4))
    for index, axis in enumerate(np.atleast_1d(axes).ravel()):
        axis.axis("off")
        if index >= count:
            continue
        predicted = int(probabilities[index].argmax())
        axis.imshow(images_uint8[index], interpolation="nearest")
        axis.set_title(
            f"true {CLASSES[labels[index]]}\npred {CLASSES[predicted]} {probabilities[index, predicted]:.0%}",
            fontsize=8,
        )
    figure.suptitle("Most confident mistakes")
    _save(figure, path)


def plot_reliability(before: dict, after: dict, path: Path) -> None:
    """Accuracy against confidence per equal-width bin, before and after temperature scaling, with the diagonal
    (perfect calibration). `before`/`after` are calibration.reliability_bins tables."""
    bins = len(before["counts"])
    centres = (np.arange(bins) + 0.5) / bins
    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for table, style, label in ((before, "o-", "before (T = 1)"), (after, "s-", "after temperature scaling")):
        filled = table["counts"] > 0
        axis.plot(table["confidence"][filled], table["accuracy"][filled], style, label=label)
    axis.bar(centres, before["counts"] / max(1, before["counts"].sum()), width=1 / bins, alpha=0.15, color="gray")
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max probability)", ylabel="accuracy")
    axis.set_title(f"Reliability on the test split ({bins} bins; bars: share of images, before)")
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left")
    _save(figure, path)
