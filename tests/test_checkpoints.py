"""Checkpoints and the run folder, through train(): never overwritten, written atomically, refused when damaged."""

import pytest
import torch
from support import tiny_dataset, tiny_recipe

from cifar10_classifier.runs import RunFolder, RunFolderError
from cifar10_classifier.training.loop import train

CHECKPOINT_NAME = RunFolder(".").checkpoint.name


def test_existing_run_folder_is_never_overwritten(tmp_path):
    dataset = tiny_dataset()
    recipe = tiny_recipe("fast", epochs=1)
    train(recipe, dataset, tmp_path, show_progress=False)
    with pytest.raises(RunFolderError, match="--resume"):
        train(recipe, dataset, tmp_path, show_progress=False)
    train(recipe, dataset, tmp_path, force=True, show_progress=False)
    with pytest.raises(RunFolderError, match="nothing to resume"):
        train(recipe, dataset, tmp_path / "empty", resume=True, show_progress=False)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    dataset = tiny_dataset()
    recipe = tiny_recipe("fast", epochs=1)
    train(recipe, dataset, tmp_path, show_progress=False)
    good = (tmp_path / CHECKPOINT_NAME).read_bytes()

    def half_write(payload, path):
        with open(path, "wb") as handle:
            handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_write)
    with pytest.raises(OSError, match="disk full"):
        train(recipe, dataset, tmp_path, force=True, show_progress=False)
    assert not list(tmp_path.glob(".*.tmp"))
    # --force removed the old checkpoint on purpose; a failed save never leaves a half-written one behind.
    assert not (tmp_path / CHECKPOINT_NAME).exists() or (tmp_path / CHECKPOINT_NAME).read_bytes() == good


def test_damaged_checkpoint_is_refused_with_advice(tmp_path):
    dataset = tiny_dataset()
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(RunFolderError, match="--force"):
        train(tiny_recipe("fast", epochs=1), dataset, tmp_path, resume=True, show_progress=False)
