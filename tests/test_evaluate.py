import json

import numpy as np
import pytest

from cifar10_classifier.evaluation.metrics import compute_metrics, confusion_matrix, per_class_metrics


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
        "calibration.png",
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
    # The tiny recipe holds nothing out, so T is fitted on training images and the card says so.
    calibration = metrics["calibration"]
    assert calibration["bins"] == 15 and calibration["temperature"] > 0
    assert 0 <= calibration["ece_after"] <= 1 and 0 <= calibration["ece_before"] <= 1
    assert "held none out" in calibration["fit_on"] and card["calibration"]["fit_on"] == calibration["fit_on"]
    assert card["calibration"]["ece_after"] == calibration["ece_after"]
    assert "## Calibration" in report and "calibration.png" in report


def test_calibrate_fits_on_held_out_logits_and_reports_on_test():
    from cifar10_classifier.evaluation.metrics import calibrate

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 10)) * 2
    labels = np.array([rng.choice(10, p=row) for row in np.exp(logits) / np.exp(logits).sum(1, keepdims=True)])
    # Over-confident by 3x: the fit on the first half brings the ECE on the second half down.
    entry, (before, after) = calibrate(logits[:2000] * 3, labels[:2000], logits[2000:] * 3, labels[2000:])
    assert entry["temperature"] == pytest.approx(3, rel=0.1) and entry["held_out_images"] == 2000
    assert entry["ece_after"] < entry["ece_before"] / 2
    assert before["counts"].sum() == after["counts"].sum() == 2000


def test_evaluate_cli_on_a_run(trained_run, tmp_path, monkeypatch):
    import cifar10_classifier.data as data_module
    from cifar10_classifier.cli import main
    from cifar10_classifier.evaluation import metrics as evaluate

    run, dataset = trained_run
    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: dataset)
    seen = []
    real_evaluate = evaluate.evaluate_model
    monkeypatch.setattr(
        evaluate, "evaluate_model", lambda *a, **k: seen.append(k["batch_size"]) or real_evaluate(*a, **k)
    )
    assert main(["evaluate", str(run), "--out", str(tmp_path / "eval")]) == 0
    assert (tmp_path / "eval" / "metrics.json").is_file()
    assert seen == [json.loads((run / "config.json").read_text())["recipe"]["eval_batch_size"]]
    assert main(["evaluate", str(tmp_path / "missing")]) == 2


def test_evaluation_batch_size_changes_speed_not_results(tmp_path, monkeypatch):
    import torch

    from cifar10_classifier.evaluation import metrics as evaluate
    from cifar10_classifier.models import create_model

    torch.manual_seed(0)
    model = create_model("fast-net", widths=[8, 8, 8]).eval()
    images = torch.randn(23, 3, 32, 32)
    one_batch = evaluate.predict_plain_and_tta_logits(model, images, tta_level=2, batch_size=500)
    small_batches = evaluate.predict_plain_and_tta_logits(model, images, tta_level=2, batch_size=7)
    for a, b in zip(one_batch, small_batches, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    # evaluate_model passes its batch size on (training runs give it the recipe's eval_batch_size).
    seen = []
    real = evaluate.predict_plain_and_tta_logits
    monkeypatch.setattr(
        evaluate,
        "predict_plain_and_tta_logits",
        lambda model, images, tta, batch_size, bf16: seen.append(batch_size) or real(model, images, tta, batch_size),
    )
    labels = np.arange(23) % 10
    images_uint8 = np.zeros((23, 32, 32, 3), np.uint8)
    evaluate.evaluate_model(model, images_uint8, labels, 0, tmp_path, batch_size=7)
    assert seen == [7]
