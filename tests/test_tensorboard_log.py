"""TensorBoard event files, read back with TensorBoard's own reader (which honours its purge rules, too)."""

import json
import sys
from dataclasses import replace

import pytest
from support import tiny_dataset, tiny_recipe
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import cifar10_classifier.data as data_module
from cifar10_classifier.jobs import TrainJob, run_training_job
from cifar10_classifier.runs import RunFolder
from cifar10_classifier.training import loop, tensorboard_log
from cifar10_classifier.training.distributed import DistributedContext
from cifar10_classifier.training.recipes import resolve_recipe
from cifar10_classifier.training.tensorboard_log import EPOCH_TAGS, STEP_LOSS_TAG, TensorBoardLog

STEP_LOSS_EVERY = 3  # a tiny run has 4 steps an epoch: every 3rd lands on different steps of each epoch


@pytest.fixture
def tiny_data(monkeypatch):
    dataset = tiny_dataset()
    monkeypatch.setattr(data_module, "load_dataset", lambda *args, **kwargs: dataset)
    monkeypatch.setattr(tensorboard_log, "STEP_LOSS_EVERY", STEP_LOSS_EVERY)
    return dataset


def tiny_fast_small(**overrides):
    """fast-small shrunk to seconds, with a validation split so that every epoch scalar has values."""
    small = {"model_config": {"widths": [8, 16, 16]}, "batch_size": 40, "whiten_images": 100, "val_fraction": 0.2}
    return resolve_recipe("fast-small", {**small, **overrides})


def read_events(run: RunFolder) -> EventAccumulator:
    events = EventAccumulator(str(run.tensorboard_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def scalar_points(events: EventAccumulator) -> dict[str, list[tuple[int, float]]]:
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_steps_unique_and_increasing(events: EventAccumulator) -> None:
    for tag, points in scalar_points(events).items():
        steps = [step for step, _ in points]
        assert steps == sorted(set(steps)), (tag, steps)
    for tag in events.Tags()["images"]:
        steps = [image.step for image in events.Images(tag)]
        assert steps == sorted(set(steps)), (tag, steps)


def assert_epoch_scalars_match(events: EventAccumulator, history: list[dict]) -> None:
    points = scalar_points(events)
    for tag, key in EPOCH_TAGS.items():
        expected = [(row["epoch"], row[key]) for row in history]
        assert [step for step, _ in points[tag]] == [step for step, _ in expected], tag
        # Event files hold float32.
        assert [value for _, value in points[tag]] == pytest.approx([value for _, value in expected], rel=1e-6), tag


def test_a_fast_small_runs_scalars_match_its_history(tmp_path, tiny_data):
    run = RunFolder(tmp_path / "run")
    recipe = tiny_fast_small()
    result = run_training_job(TrainJob(recipe=recipe, data=None, out_dir=run.path, show_progress=False))
    history, metrics = run.read_history(), run.read_metrics()
    events = read_events(run)
    assert_steps_unique_and_increasing(events)
    assert_epoch_scalars_match(events, history)

    points = scalar_points(events)
    total_steps = len(history) * (160 // recipe.batch_size)  # 80% of 200 images train
    assert [step for step, _ in points[STEP_LOSS_TAG]] == list(range(0, total_steps, STEP_LOSS_EVERY))
    assert all(0 < loss < 10 for _, loss in points[STEP_LOSS_TAG])  # a per-image loss, not a batch's sum
    final_epoch = history[-1]["epoch"]
    assert points["test/accuracy"] == [(final_epoch, pytest.approx(metrics["test_accuracy"]))]
    assert points["test/accuracy_tta"] == [(final_epoch, pytest.approx(metrics["test_accuracy_tta"]))]
    assert sorted(events.Tags()["images"]) == ["test/confusion", "test/mistakes"]
    assert events.Images("test/confusion")[0].encoded_image_string.startswith(b"\x89PNG")

    # The recipe's fields as hyperparameters, in this run's folder (not a timestamped subfolder).
    assert [path.is_file() for path in run.tensorboard_dir.iterdir()] == [True]
    hparams_content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(hparams_content["_hparams_/session_start_info"])
    recorded = session.session_start_info.hparams
    assert recorded["name"].string_value == "fast-small"
    assert recorded["epochs"].number_value == recipe.epochs
    assert json.loads(recorded["model_config.widths"].string_value) == [8, 16, 16]
    assert recorded["channels_last"].string_value == "true"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams_content["_hparams_/experiment"]).experiment
    metric_tags = {info.name.tag for info in experiment.metric_infos}
    assert {"test/accuracy", "test/accuracy_tta", "epoch/val_accuracy"} <= metric_tags
    assert result["history"] == history


def test_a_resumed_run_continues_the_same_curves_without_duplicate_steps(tmp_path, tiny_data, monkeypatch):
    run = RunFolder(tmp_path / "run")
    job = TrainJob(recipe=tiny_fast_small(epochs=3), data=None, out_dir=run.path, show_progress=False)
    real_save = loop.save_checkpoint
    saves = []

    def die_before_the_second_checkpoint(path, *args):
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt  # killed after epoch 2's events were written, before its checkpoint
        real_save(path, *args)

    monkeypatch.setattr(loop, "save_checkpoint", die_before_the_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run_training_job(job)
    crashed = scalar_points(read_events(run))
    assert [step for step, _ in crashed["epoch/train_loss"]] == [1, 2]  # epoch 2 is on disk, not in the checkpoint
    assert max(step for step, _ in crashed[STEP_LOSS_TAG]) >= 4  # and so are some of its steps

    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    run_training_job(replace(job, resume=True))
    history = run.read_history()
    assert [row["epoch"] for row in history] == [1, 2, 3]
    events = read_events(run)
    assert_steps_unique_and_increasing(events)
    assert_epoch_scalars_match(events, history)
    assert [step for step, _ in scalar_points(events)[STEP_LOSS_TAG]] == list(range(0, 12, STEP_LOSS_EVERY))

    # Resuming the finished run evaluates it again: its results still show once.
    run_training_job(replace(job, resume=True))
    events = read_events(run)
    assert_steps_unique_and_increasing(events)
    assert_epoch_scalars_match(events, history)
    assert scalar_points(events)["test/accuracy"] == [(3, pytest.approx(run.read_metrics()["test_accuracy"]))]


def test_the_rewritten_events_sort_before_the_resumed_writers_in_the_same_second(tmp_path):
    run = RunFolder(tmp_path)
    rows = [{"epoch": epoch, "train_loss": 1.0 / epoch} for epoch in (1, 2, 3)]
    with TensorBoardLog(run) as first:
        first.start(completed_epochs=0, steps_per_epoch=4)
        for row in rows:
            first.epoch_end(row)
    with TensorBoardLog(run) as resumed:
        resumed.start(completed_epochs=1, steps_per_epoch=4)
        resumed.epoch_end({"epoch": 2, "train_loss": 0.25})
    assert len(list(run.tensorboard_dir.iterdir())) == 2
    assert scalar_points(read_events(run))["epoch/train_loss"] == [(1, 1.0), (2, 0.25)]
    with TensorBoardLog(run) as anew:  # a run started over (--force) keeps none of the old events
        anew.start(completed_epochs=0, steps_per_epoch=4)
    assert "epoch/train_loss" not in read_events(run).Tags()["scalars"]


def test_no_tensorboard_writes_no_event_files(tmp_path, tiny_data):
    from cifar10_classifier.cli import build_parser, main

    assert build_parser().parse_args(["train"]).tensorboard
    out = tmp_path / "run"
    tiny = ["--set", "model_config.widths=[8,16,16]", "--set", "whiten_images=100", "--batch-size", "40"]
    assert main(["train", "--no-tensorboard", "--quiet", "--epochs", "1", "--out", str(out), *tiny]) == 0
    assert (out / "model.safetensors").is_file() and not RunFolder(out).tensorboard_dir.exists()


def test_only_rank_0_writes():
    run = RunFolder("unused")
    assert TensorBoardLog.for_run(run, enabled=True, dist=DistributedContext(rank=0, world_size=2)).enabled
    assert not TensorBoardLog.for_run(run, enabled=True, dist=DistributedContext(rank=1, world_size=2)).enabled
    assert not TensorBoardLog.for_run(run, enabled=False, dist=DistributedContext()).enabled


def test_without_the_package_training_goes_on_and_says_so_once(tmp_path, tiny_data, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now fails, as when not installed
    job = TrainJob(recipe=tiny_recipe("fast", epochs=2), data=None, out_dir=tmp_path, evaluate=False)
    run_training_job(job)
    assert (tmp_path / "model.safetensors").is_file() and not RunFolder(tmp_path).tensorboard_dir.exists()
    assert capsys.readouterr().err.count(tensorboard_log.MISSING_PACKAGE) == 1
