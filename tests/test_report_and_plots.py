"""The report and the figures: written atomically, readable, and saying what a person looks for."""

import numpy as np
from PIL import Image

from cifar10_classifier import CLASSES
from cifar10_classifier.evaluation import plots
from cifar10_classifier.evaluation.metrics import compute_metrics
from cifar10_classifier.evaluation.report import write_report
from cifar10_classifier.runs import RunFolder

HISTORY = [
    {
        "epoch": e,
        "train_loss": 2.0 / e,
        "train_accuracy": 0.3 * e,
        "val_loss": 2.1 / e,
        "val_accuracy": 0.28 * e,
        "lr": 0.1,
        "images_per_second": 100.0,
    }
    for e in (1, 2, 3)
]


def test_figures_are_pngs_with_nothing_left_behind(tmp_path):
    rng = np.random.default_rng(0)
    plots.plot_curves(HISTORY, tmp_path / "curves.png")
    plots.plot_confusion(rng.integers(0, 20, size=(10, 10)), tmp_path / "confusion.png")
    images = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    plots.plot_mistakes(images, np.arange(4), np.full((4, 10), 0.1), tmp_path / "mistakes.png")
    for name in ("curves.png", "confusion.png", "mistakes.png"):
        with Image.open(tmp_path / name) as figure:
            assert figure.format == "PNG" and figure.size[0] > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion.png", "curves.png", "mistakes.png"]


def test_report_names_accuracy_classes_figures_and_epochs(tmp_path):
    logits = np.eye(10)[np.arange(20) % 10] * 5
    metrics = {"test": compute_metrics(logits, np.arange(20) % 10), "tta_level": 0}
    metrics["test_accuracy"] = metrics["test_accuracy_tta"] = metrics["test"]["accuracy"]
    card = {"name": "cifar10-fast", "recipe": "fast", "model": "fast-net", "machine": {"cpu": "Test CPU"}}
    write_report(RunFolder(tmp_path), metrics, HISTORY, card)
    report = (tmp_path / "report.md").read_text()
    assert "# cifar10-fast" in report and "100.00%" in report and "Test CPU" in report
    assert all(name in report for name in CLASSES)
    assert "![confusion matrix](confusion.png)" in report and "| 3 |" in report
