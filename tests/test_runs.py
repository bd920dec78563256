"""The run folder: its layout, the never-overwrite rule, typed reads and writes, and clear errors."""

import json

import pytest

from cifar10_classifier.errors import UserError
from cifar10_classifier.runs import FP32_NAME, INT8_NAME, RunFolder, RunFolderError


def test_the_layout_is_named_in_one_place(tmp_path):
    run = RunFolder(tmp_path)
    names = [run.config, run.history, run.checkpoint, run.weights, run.card, run.metrics, run.report]
    assert [p.name for p in names] == [
        "config.json",
        "history.json",
        "checkpoint.pt",
        "model.safetensors",
        "model.json",
        "metrics.json",
        "report.md",
    ]
    plots = [run.curves_plot, run.confusion_plot, run.calibration_plot, run.mistakes_plot]
    assert all(p.suffix == ".png" and p.parent == tmp_path for p in plots)
    assert run.export_dir == tmp_path / "export" and (FP32_NAME, INT8_NAME) == ("model-fp32.onnx", "model-int8.onnx")


def test_prepare_never_overwrites_without_resume_or_force(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert run.prepare(resume=False, force=False) is False and run.path.is_dir()
    run.write_history([{"epoch": 1}])
    with pytest.raises(RunFolderError, match="--resume to continue it or --force"):
        run.prepare(resume=False, force=False)
    with pytest.raises(RunFolderError, match="nothing to resume"):
        run.prepare(resume=True, force=False)
    run.checkpoint.write_bytes(b"state")
    assert run.prepare(resume=True, force=False) is True
    assert run.prepare(resume=False, force=True) is False and not run.checkpoint.exists()
    assert issubclass(RunFolderError, UserError)


def test_reads_and_writes_round_trip_and_say_what_is_missing(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_config() is None and run.read_history() == []
    run.write_config({"recipe": {"eval_batch_size": 100, "name": "fast"}})
    run.write_card({"name": "m"})
    run.write_metrics({"test_accuracy": 0.5})
    assert run.recipe_value("eval_batch_size", 500) == 100 and run.recipe_value("missing", 7) == 7
    assert run.read_card() == {"name": "m"} and run.read_metrics()["test_accuracy"] == 0.5
    assert json.loads(run.config.read_text())["recipe"]["name"] == "fast"
    assert not list(tmp_path.glob("*.tmp*"))  # every write renamed into place
    run.card.write_text("{not json")
    with pytest.raises(RunFolderError, match="unreadable"):
        run.read_card()


def test_of_weights_finds_the_folder_or_says_how_to_make_one(tmp_path):
    with pytest.raises(RunFolderError, match="train it with `cifar10 train`"):
        RunFolder.of_weights(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(RunFolderError, match=r"no model\.json card"):
        RunFolder.of_weights(tmp_path)
    (tmp_path / "model.json").write_text("{}")
    assert RunFolder.of_weights(tmp_path / "model.safetensors").path == tmp_path
