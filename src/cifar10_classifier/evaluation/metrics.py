"""Accuracy, per-class precision/recall, confusion matrix, test-time augmentation, and the files a person reads.

The metric functions are pure numpy; `predict_plain_and_tta_logits` runs a torch model, with and without TTA,
in one pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cifar10_classifier import CLASSES
from cifar10_classifier.calibration import nll
from cifar10_classifier.runs import RunFolder
from cifar10_classifier.training.augment import tta_views
from cifar10_classifier.training.recipes import DEFAULT_EVAL_BATCH_SIZE
from cifar10_classifier.training.tensors import normalized_tensor


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int = len(CLASSES)) -> np.ndarray:
    """(num_classes, num_classes) counts: rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def per_class_metrics(matrix: np.ndarray, classes=CLASSES) -> list[dict]:
    """Precision, recall (= per-class accuracy) and support for each class, from a confusion matrix."""
    rows = []
    for index, name in enumerate(classes):
        true_positive = matrix[index, index]
        support = matrix[index].sum()
        predicted = matrix[:, index].sum()
        recall = float(true_positive / support) if support else 0.0
        rows.append(
            {
                "class": name,
                "precision": float(true_positive / predicted) if predicted else 0.0,
                "recall": recall,
                "accuracy": recall,
                "support": int(support),
            }
        )
    return rows


def compute_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    predictions = logits.argmax(1)
    matrix = confusion_matrix(labels, predictions)
    return {
        "accuracy": float((predictions == labels).mean()),
        "loss": nll(logits, labels),
        "per_class": per_class_metrics(matrix),
        "confusion_matrix": matrix.tolist(),
    }


@torch.no_grad()
def predict_plain_and_tta_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    tta_level: int = 0,
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    bf16: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised float images (N, 3, 32, 32) -> (logits of the images as they are, logits averaged over the TTA
    views), both (N, 10). The first TTA view is the image itself, so one pass gives both."""
    was_training = model.training
    model.eval()
    plain_outputs, tta_outputs = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        logits: torch.Tensor | float = 0.0
        for index, (view, weight) in enumerate(tta_views(batch, tta_level)):
            with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
                view_logits = model(view.contiguous(memory_format=torch.channels_last)).float()
            if index == 0:
                plain_outputs.append(view_logits.cpu())
            logits = logits + weight * view_logits
        tta_outputs.append(torch.as_tensor(logits).cpu())
    model.train(was_training)
    return torch.cat(plain_outputs).numpy(), torch.cat(tta_outputs).numpy()


def predict_logits(
    model: torch.nn.Module,
    images: torch.Tensor,
    tta_level: int = 0,
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    bf16: bool = False,
) -> np.ndarray:
    """Normalised float images (N, 3, 32, 32) -> logits (N, 10), averaged over the TTA views."""
    return predict_plain_and_tta_logits(model, images, tta_level, batch_size, bf16)[1]


def most_confident_mistakes(logits: np.ndarray, labels: np.ndarray, count: int = 25) -> list[int]:
    probabilities = F.softmax(torch.from_numpy(logits), dim=1).numpy()
    predictions = probabilities.argmax(1)
    wrong = np.flatnonzero(predictions != labels)
    confidence = probabilities[wrong, predictions[wrong]]
    return wrong[np.argsort(-confidence)][:count].tolist()


def calibrate(
    held_out_logits: np.ndarray, held_out_labels: np.ndarray, test_logits: np.ndarray, test_labels: np.ndarray
) -> tuple[dict, tuple[dict, dict]]:
    """T fitted on the held-out logits only; the test split reported on -> (the metrics entry, the reliability
    tables before and after)."""
    from cifar10_classifier import calibration as cal

    temperature = cal.fit_temperature(held_out_logits, held_out_labels)
    before, after = cal.softmax(test_logits), cal.softmax(test_logits / temperature)
    entry = {
        "temperature": temperature,
        "ece_before": cal.expected_calibration_error(before, test_labels),
        "ece_after": cal.expected_calibration_error(after, test_labels),
        "bins": cal.ECE_BINS,
        "held_out_images": len(held_out_labels),
    }
    return entry, (cal.reliability_bins(before, test_labels), cal.reliability_bins(after, test_labels))


def evaluate_model(
    model,
    test_images_uint8: np.ndarray,
    test_labels: np.ndarray,
    tta_level: int,
    out_dir: Path,
    history: list[dict] | None = None,
    card: dict | None = None,
    bf16: bool = False,
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    held_out: tuple[np.ndarray, np.ndarray, str] | None = None,
) -> dict:
    """Evaluate on the test split and write metrics.json, curves.png, confusion.png, mistakes.png, report.md.

    With held_out (training images uint8, their labels, what they are) it also fits the temperature on them and
    reports the test ECE before and after in metrics.json, report.md and calibration.png."""
    from cifar10_classifier.evaluation import plots
    from cifar10_classifier.evaluation.report import write_report

    device = next(model.parameters()).device
    images = normalized_tensor(test_images_uint8, device, channels_last=True)
    labels = np.asarray(test_labels)
    plain_logits, final_logits = predict_plain_and_tta_logits(model, images, tta_level, batch_size, bf16)
    metrics: dict[str, Any] = {"test": compute_metrics(plain_logits, labels)}
    if tta_level:
        metrics["test_tta"] = compute_metrics(final_logits, labels)
    metrics["test_accuracy"] = metrics["test"]["accuracy"]
    metrics["test_accuracy_tta"] = metrics.get("test_tta", metrics["test"])["accuracy"]
    metrics["tta_level"] = tta_level
    reliability = None
    if held_out is not None:
        held_images = normalized_tensor(held_out[0], device, channels_last=True)
        held_logits = predict_logits(model, held_images, tta_level, batch_size, bf16)
        metrics["calibration"], reliability = calibrate(held_logits, np.asarray(held_out[1]), final_logits, labels)
        metrics["calibration"]["fit_on"] = held_out[2]
    run = RunFolder(out_dir)
    run.write_metrics(metrics)
    headline = metrics.get("test_tta", metrics["test"])
    if history:
        plots.plot_curves(history, run.curves_plot)
    plots.plot_confusion(np.asarray(headline["confusion_matrix"]), run.confusion_plot)
    if reliability is not None:
        plots.plot_reliability(*reliability, run.calibration_plot)
    mistakes = most_confident_mistakes(final_logits, labels)
    probabilities = F.softmax(torch.from_numpy(final_logits), dim=1).numpy()
    plots.plot_mistakes(
        np.asarray(test_images_uint8)[mistakes], labels[mistakes], probabilities[mistakes], run.mistakes_plot
    )
    write_report(run, metrics, history or [], card or {})
    return metrics
