"""bench/ood.py end to end on a model exported from the tiny trained run: every candidate, every set, the files."""

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("tta_level", [0, 1])
def test_ood_bench_runs_on_an_exported_tiny_model(trained_run, tmp_path, monkeypatch, tta_level):
    import cifar10_classifier.data as data_module
    from cifar10_classifier.export.graph import ExportConfig
    from cifar10_classifier.jobs import export_run

    run, dataset = trained_run
    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: dataset)
    config = ExportConfig(
        out_dir=tmp_path / "export", tta_level=tta_level, calibration_images=100, allow_accuracy_drop=True
    )
    summary = export_run(run, None, config, log=lambda *_: None)
    monkeypatch.undo()

    monkeypatch.syspath_prepend(str(BENCH))
    import common
    import ood

    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    # The export's data in the export's order: the detector's Gaussian is fitted on a draw of indices, which the
    # bench repeats to check the graph's score against its numpy twin.
    monkeypatch.setattr(ood, "load_dataset", lambda *a, **k: dataset)
    argv = ["ood.py", "--model", summary["int8"], "--data", "tiny", "--ood-images", "20", "--means-images", "5000"]
    monkeypatch.setattr(sys, "argv", argv)
    assert ood.main() == 0
    result = json.loads((tmp_path / "results" / "ood.json").read_text())
    expected = (
        {"msp", "energy", "mahalanobis", "mahalanobis_l2_normalized", "feature_norm", "layer_statistics"}
        if tta_level == 0
        else {
            "msp",
            "energy",
        }
    )
    assert set(result["candidates"]) == expected
    assert result["served_check"]["detector"] == "layer_statistics"
    if tta_level == 0:  # with TTA the graph's features are averaged over views: the bench has no numpy twin
        assert result["served_check"]["max_abs_diff_vs_numpy"] < 1e-3
    assert len(result["candidates"]["energy"]["sets"]) == 7 and result["best_measured"] in expected
    assert all(0 <= entry["fpr"] <= 1 for entry in result["candidates"]["energy"]["sets"].values())
    assert set(result["ood_output_cost"]) == {"batch_1", "batch_256"}
    assert "| energy |" in (tmp_path / "results" / "ood.md").read_text()
