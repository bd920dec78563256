"""`cifar10 train --resume`: the run's own recipe, seed and data; contradictions refused in one line."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from support import tiny_dataset, write_image_folder

from cifar10_classifier import jobs
from cifar10_classifier.cli import main
from cifar10_classifier.resume import RESUMABLE_FIELDS, ResumeError, plan_resume
from cifar10_classifier.runs import RunFolder, RunFolderError
from cifar10_classifier.training import loop
from cifar10_classifier.training.recipes import resolve_recipe

# Each recipe shrunk to seconds on tiny data, written as the user would type it.
SHRUNK = {
    "fast-small": ["--set", "model_config.widths=[8, 16, 16]", "--set", "whiten_images=100", "--batch-size", "40"],
    "classic": [
        *("--set", "model_config.widths=[8, 16]", "--set", "model_config.block_dropout=[0.1, 0.1]"),
        *("--set", "model_config.dense_width=16", "--batch-size", "32"),
    ],
}


@pytest.fixture(scope="module")
def data_folder(tmp_path_factory):
    return write_image_folder(tiny_dataset(), tmp_path_factory.mktemp("data") / "images")


@pytest.fixture(autouse=True)
def _no_evaluation(monkeypatch):
    # The test split's evaluation, plots and report cost seconds and are not what is resumed.
    monkeypatch.setattr(jobs, "TrainJob", functools.partial(jobs.TrainJob, evaluate=False))


def _weights(run) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(RunFolder(run).weights)


def _interrupt_after_first_checkpoint(monkeypatch) -> None:
    real_save = loop.save_checkpoint

    def save_then_die(path, *args):
        real_save(path, *args)
        raise KeyboardInterrupt  # killed right after epoch 1's checkpoint

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)


@pytest.mark.parametrize("recipe", ["fast-small", "classic"])
def test_resume_without_repeating_the_recipe_ends_where_an_uninterrupted_run_does(
    recipe, data_folder, tmp_path, monkeypatch, capsys
):
    start = ["train", "--recipe", recipe, *SHRUNK[recipe], "--epochs", "2", "--data", str(data_folder), "--quiet"]
    assert main([*start, "--out", str(tmp_path / "straight")]) == 0

    with monkeypatch.context() as patched:
        _interrupt_after_first_checkpoint(patched)
        assert main([*start, "--out", str(tmp_path / "cut")]) == 130
    assert "continue with --resume" in capsys.readouterr().err

    assert main(["train", "--out", str(tmp_path / "cut"), "--resume"]) == 0  # no recipe, data or seed repeated
    assert f"recipe {recipe}" in capsys.readouterr().out
    history = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    expected, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "cut")
    assert expected.keys() == resumed.keys()
    for key, value in expected.items():
        assert torch.allclose(value.float(), resumed[key].float(), atol=1e-6), key


@pytest.fixture
def interrupted_run(data_folder, tmp_path, monkeypatch):
    """A fast-small run cut after epoch 1 of 2."""
    out = tmp_path / "run"
    with monkeypatch.context() as patched:
        _interrupt_after_first_checkpoint(patched)
        start = ["train", "--recipe", "fast-small", *SHRUNK["fast-small"], "--epochs", "2", "--seed", "3"]
        assert main([*start, "--data", str(data_folder), "--out", str(out), "--quiet"]) == 130
    return out


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--recipe", "fast"], "is a fast-small run, not fast"),
        (["--lr", "0.5"], "in the run, 0.5 given"),
        (["--seed", "4"], "seed is 3 in the run, 4 given"),
        (["--set", "model_config.widths=[8, 16, 32]"], "model_config.widths is [8, 16, 16] in the run, [8, 16, 32]"),
        (["--set", "flip=random"], "flip is 'alternating' in the run, 'random' given"),
        (["--epochs", "0"], "must be positive"),
    ],
)
def test_a_flag_that_contradicts_the_run_is_refused_in_one_line(interrupted_run, flags, named, capsys):
    capsys.readouterr()
    assert main(["train", "--out", str(interrupted_run), "--resume", *flags]) == 2
    error = capsys.readouterr().err.strip()
    assert named in error and len(error.splitlines()) == 1, error
    assert "--force" not in error  # the checkpoint is still good


def test_flags_that_agree_with_the_run_or_are_safe_to_change_are_accepted(interrupted_run, capsys):
    same = ["--recipe", "fast-small", "--seed", "3", "--batch-size", "40", "--set", "threads=1", "--epochs", "3"]
    assert main(["train", "--out", str(interrupted_run), "--resume", *same]) == 0
    assert "epochs 2 -> 3" in capsys.readouterr().out
    history = json.loads((interrupted_run / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert set(RESUMABLE_FIELDS) == {"epochs", "threads"}


def test_other_data_is_refused_naming_both_checksums(interrupted_run, tmp_path, capsys):
    other = write_image_folder(tiny_dataset(seed=1), tmp_path / "other")
    assert main(["train", "--out", str(interrupted_run), "--resume", "--data", str(other)]) == 2
    error = capsys.readouterr().err.strip()
    config = json.loads((interrupted_run / "config.json").read_text())
    assert config["data"]["sha256"][:12] in error and str(other) in error and len(error.splitlines()) == 1


def test_the_run_data_gone_says_to_pass_data(interrupted_run, data_folder, tmp_path, capsys):
    config_path = interrupted_run / "config.json"
    config = json.loads(config_path.read_text())
    config["data"]["path"] = str(tmp_path / "moved-away")
    config_path.write_text(json.dumps(config))
    assert main(["train", "--out", str(interrupted_run), "--resume"]) == 2
    error = capsys.readouterr().err
    assert "moved-away cannot be loaded" in error and "pass --data" in error
    assert main(["train", "--out", str(interrupted_run), "--resume", "--data", str(data_folder), "--quiet"]) == 0


def test_fewer_epochs_than_completed_and_resume_with_force_are_refused(interrupted_run, capsys):
    assert main(["train", "--out", str(interrupted_run), "--resume", "--epochs", "3", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(interrupted_run), "--resume", "--epochs", "2"]) == 2
    assert "epochs=2 is fewer than the 3 epochs" in capsys.readouterr().err
    assert main(["train", "--out", str(interrupted_run), "--resume", "--force"]) == 2
    assert "--resume and --force" in capsys.readouterr().err


def test_a_checkpoint_that_does_not_fit_its_model_is_one_line_without_force(interrupted_run, capsys):
    # config.json edited by hand (or another version's model): the checkpoint itself is fine.
    config_path = interrupted_run / "config.json"
    config = json.loads(config_path.read_text())
    config["recipe"]["model_config"]["widths"] = [8, 16, 32]
    config_path.write_text(json.dumps(config))
    assert main(["train", "--out", str(interrupted_run), "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--force" not in error, error
    assert "does not fit fast-net" in error and "tensors of another shape" in error and "is [16" in error


def test_a_damaged_checkpoint_is_the_one_case_that_advises_starting_over(interrupted_run, capsys):
    RunFolder(interrupted_run).checkpoint.write_bytes(b"not a checkpoint")
    assert main(["train", "--out", str(interrupted_run), "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert "cannot be read" in error and "--force" in error and len(error.splitlines()) == 1


def test_plan_resume_without_a_checkpoint_or_config(tmp_path):
    run = RunFolder(tmp_path)
    with pytest.raises(RunFolderError, match="nothing to resume"):
        plan_resume(run, recipe_name=None, overrides={}, data=None)
    run.checkpoint.write_bytes(b"x")  # an older run, without config.json: the flags as given
    plan = plan_resume(run, recipe_name="classic", overrides={"epochs": "4"}, data="somewhere")
    assert plan.recipe == resolve_recipe("classic", {"epochs": 4}) and plan.data == "somewhere"
    run.config.write_text(json.dumps({"recipe": {"name": "fast", "no_such_field": 1}}))
    with pytest.raises(RunFolderError, match="its recipe cannot be read"):
        plan_resume(run, recipe_name=None, overrides={}, data=None)
    assert issubclass(ResumeError, Exception)


def test_skipping_bad_images_only_on_resume_is_refused(interrupted_run, capsys):
    assert main(["train", "--out", str(interrupted_run), "--resume", "--skip-bad-images"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--skip-bad-images was off" in error and len(error.splitlines()) == 1
    assert json.loads((interrupted_run / "config.json").read_text())["data"]["skip_bad_images"] is False


def test_the_runs_data_changed_in_place_is_refused_without_blaming_data(interrupted_run, data_folder, tmp_path, capsys):
    import shutil

    moved = tmp_path / "changed"
    shutil.copytree(data_folder, moved)
    (next((moved / "train").rglob("*.png"))).write_bytes((next((moved / "test").rglob("*.png"))).read_bytes())
    config_path = interrupted_run / "config.json"
    config = json.loads(config_path.read_text())
    config["data"]["path"] = str(moved)
    config_path.write_text(json.dumps(config))
    assert main(["train", "--out", str(interrupted_run), "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert "has changed since the run started" in error and "--data " + str(moved) not in error


def test_a_run_stopped_in_its_first_epoch_is_told_to_start_with_force(data_folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    with monkeypatch.context() as patched:
        patched.setattr(loop, "run_epoch", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        start = ["train", "--recipe", "fast-small", *SHRUNK["fast-small"], "--data", str(data_folder), "--quiet"]
        assert main([*start, "--out", str(out)]) == 130
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume"]) == 2
    assert "stopped before its first epoch ended); start it again with --force" in capsys.readouterr().err
