import json

import numpy as np
import pytest

from cifar10_classifier.evaluate import compute_metrics, confusion_matrix, per_class_metrics


def test_confusion_matrix_and_per_class_figures_on_a_hand_made_example():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 2, 2])
    matrix = confusion_matrix(labels, predictions, num_classes=3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    rows = per_class_metrics(matrix, classes=("a", "b", "c"))
    assert rows[0] == {
        "class": "a",
        "precision": 1.0,
        "recall": pytest.approx(2 / 3),
        "accuracy": pytest.approx(2 / 3),
        "support": 3,
    }
    assert rows[1]["precision"] == pytest.approx(0.5) and rows[1]["recall"] == pytest.approx(0.5)
    assert rows[2]["precision"] == pytest.approx(0.5) and rows[2]["recall"] == 1.0


def test_compute_metrics_accuracy_and_loss():
    logits = np.log(np.array([[0.9, 0.1] + [1e-9] * 8, [0.2, 0.8] + [1e-9] * 8]))
    metrics = compute_metrics(logits, np.array([0, 0]))
    assert metrics["accuracy"] == 0.5
    assert metrics["loss"] == pytest.approx(-(np.log(0.9) + np.log(0.2)) / 2, rel=1e-3)


def test_training_run_writes_every_result_file(trained_run):
    run, _ = trained_run
    for name in (
        "metrics.json",
        "curves.png",
        "confusion.png",
        "mistakes.png",
        "report.md",
        "model.safetensors",
        "model.json",
        "config.json",
        "history.json",
        "checkpoint.pt",
    ):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"test_accuracy", "test_accuracy_tta", "test", "test_tta"} <= set(metrics)
    assert len(metrics["test"]["per_class"]) == 10
    report = (run / "report.md").read_text()
    assert "confusion.png" in report and "| cat |" in report
    card = json.loads((run / "model.json").read_text())
    assert card["accuracy"]["test_tta"] == metrics["test_accuracy_tta"]


def test_evaluate_cli_on_a_run(trained_run, tmp_path, monkeypatch):
    import cifar10_classifier.data as data_module
    from cifar10_classifier.cli import main

    run, dataset = trained_run
    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: dataset)
    assert main(["evaluate", str(run), "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "metrics.json").is_file()
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
