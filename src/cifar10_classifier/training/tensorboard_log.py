"""A training run's TensorBoard event files, in RUN/tensorboard/, written by rank 0 only.

    epoch/<history key>  each epoch's train_loss, train_accuracy, val_loss, val_accuracy, lr, images_per_second:
                         history.json's keys and numbers, at step = the epoch
    step/train_loss      rank 0's batch loss per image every STEP_LOSS_EVERY optimizer steps, at the global step
    test/accuracy, test/accuracy_tta, test/confusion, test/mistakes
                         after evaluation, at the last epoch, with the recipe as hyperparameters (the HParams tab)

A resumed run continues the same curves. Before it writes, it rewrites the event files to hold only what its
checkpoint holds (prune_events), so no step shows twice whichever reader draws them. One purge step
(SummaryWriter's purge_step) cannot do it: the epoch axis and the step axis would each need their own. Each
epoch's events are flushed before its checkpoint is saved: an interruption leaves either events that the resumed
run drops or a checkpoint whose events are all on disk, never a gap.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cifar10_classifier.atomic import atomic_path
from cifar10_classifier.runs import RunFolder
from cifar10_classifier.training.recipes import Recipe

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from cifar10_classifier.training.distributed import DistributedContext

STEP_LOSS_EVERY = 10  # optimizer steps between step/train_loss points: ~40 an epoch of `fast` on CIFAR-10
EPOCH_TAGS = {
    f"epoch/{key}": key
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "images_per_second")
}
STEP_LOSS_TAG = "step/train_loss"
TEST_ACCURACY_TAGS = {"test/accuracy": "test_accuracy", "test/accuracy_tta": "test_accuracy_tta"}
# The last epoch's numbers that the HParams tab shows beside the test accuracies.
FINAL_EPOCH_METRIC_TAGS = ("epoch/train_loss", "epoch/train_accuracy", "epoch/val_loss", "epoch/val_accuracy")
MISSING_PACKAGE = "TensorBoard logging is off: the tensorboard package is not installed (pip install tensorboard)"


class TensorBoardLog:
    """The run's TensorBoard writer, or a log that writes nothing (turned off, not rank 0, or no tensorboard).

    The training loop calls start (once any checkpoint is loaded), step and epoch_end; the training job calls
    final after evaluation, and closes it (it is a context manager)."""

    def __init__(self, run: RunFolder | None, step_loss_every: int | None = None):
        self.run = run  # None: off
        self.step_loss_every = step_loss_every or STEP_LOSS_EVERY  # None: the module's constant
        self._writer: SummaryWriter | None = None

    @classmethod
    def off(cls) -> TensorBoardLog:
        return cls(None)

    @classmethod
    def for_run(cls, run: RunFolder, *, enabled: bool, dist: DistributedContext) -> TensorBoardLog:
        """`run`'s log on rank 0 when enabled; says so once when the tensorboard package is missing."""
        if not (enabled and dist.is_main):
            return cls.off()
        try:
            import tensorboard  # noqa: F401  (torch.utils.tensorboard writes through it)
        except ImportError:
            print(MISSING_PACKAGE, file=sys.stderr, flush=True)
            return cls.off()
        return cls(run)

    @property
    def enabled(self) -> bool:
        return self.run is not None

    def start(self, completed_epochs: int, steps_per_epoch: int) -> None:
        """Open the writer, after dropping the events of the epochs the checkpoint does not hold (every event,
        when the run starts anew)."""
        if self.run is None or self._writer is not None:
            return
        from torch.utils.tensorboard import SummaryWriter

        def held_by_checkpoint(tag: str, step: int) -> bool:
            if tag in EPOCH_TAGS:
                return step <= completed_epochs
            if tag == STEP_LOSS_TAG:
                return step < completed_epochs * steps_per_epoch
            return False  # test results, figures, hyperparameters: written again after the next evaluation

        log_dir = self.run.tensorboard_dir
        prune_events(log_dir, held_by_checkpoint)
        self._writer = SummaryWriter(str(log_dir))

    def step(self, global_step: int, batch_loss_sum: torch.Tensor, images: int) -> None:
        """One optimizer step's summed loss over `images` images; only every step_loss_every-th reaches the file
        (reading the tensor waits for the step to finish)."""
        if self._writer is None or global_step % self.step_loss_every:
            return
        self._writer.add_scalar(STEP_LOSS_TAG, float(batch_loss_sum) / max(1, images), global_step)

    def epoch_end(self, row: dict[str, Any]) -> None:
        """One history row at step = its epoch, flushed: the checkpoint saved next must find it on disk."""
        if self._writer is None:
            return
        for tag, key in EPOCH_TAGS.items():
            if row.get(key) is not None:  # val_loss and val_accuracy are None without a validation split
                self._writer.add_scalar(tag, row[key], row["epoch"])
        self._writer.flush()

    def final(self, metrics: dict[str, Any], recipe: Recipe, history: list[dict[str, Any]]) -> None:
        """After evaluation: the test accuracies, the confusion matrix and mistakes figures it drew into the run
        folder, and the recipe's fields as hyperparameters beside the final metrics, at the last epoch."""
        if self._writer is None or self.run is None:
            return
        from torch.utils.tensorboard.summary import hparams

        step = history[-1]["epoch"] if history else 0
        final_metrics = {tag: float(metrics[key]) for tag, key in TEST_ACCURACY_TAGS.items()}
        for tag, value in final_metrics.items():
            self._writer.add_scalar(tag, value, step)
        for tag, figure in (("test/confusion", self.run.confusion_plot), ("test/mistakes", self.run.mistakes_plot)):
            if figure.is_file():
                self._writer.add_image(tag, _png_pixels(figure), step, dataformats="HWC")
        last_row = history[-1] if history else {}
        for tag in FINAL_EPOCH_METRIC_TAGS:
            if last_row.get(EPOCH_TAGS[tag]) is not None:
                final_metrics[tag] = float(last_row[EPOCH_TAGS[tag]])
        # In this run's folder, not add_hparams' timestamped subfolder: the HParams tab then reads each metric's
        # value from the scalars above.
        file_writer = self._writer.file_writer
        assert file_writer is not None  # the SummaryWriter opens it on creation
        for summary in hparams(recipe_hparams(recipe), final_metrics):
            file_writer.add_summary(summary, step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def recipe_hparams(recipe: Recipe) -> dict[str, int | float | str]:
    """The recipe's fields as hyperparameter values, under the names --set takes: numbers and strings as they are,
    flags and lists as JSON (the HParams tab would show a flag as 1.0)."""
    return {
        key: value if isinstance(value, int | float | str) and not isinstance(value, bool) else json.dumps(value)
        for key, value in recipe.flat_fields().items()
        if value is not None
    }


def prune_events(log_dir: Path, keep: Callable[[str, int], bool]) -> None:
    """Rewrite the event files in log_dir into one that holds each (tag, step) `keep` accepts, once; none: no file.

    The rewritten file is named to sort before any file a writer opens afterwards, as readers take files in name
    order. It replaces the first file atomically and the others are removed after it: interrupted between the
    two, the next prune folds the copies into one again.
    """
    for stale in log_dir.glob(".*tfevents*.tmp"):
        stale.unlink()  # a rewrite killed before its rename: readers would take it for an event file
    files = sorted(path for path in log_dir.glob("*tfevents*") if not path.name.startswith("."))
    if not files:
        return
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    kept: list[Event] = []
    seen: set[tuple[str, int]] = set()
    for path in files:
        # A record cut short by a crash ends the file's events: the loader stops there.
        for event in LegacyEventFileLoader(str(path)).Load():
            if not event.HasField("summary"):
                continue  # the file version and session events: the rewritten file gets its own version event
            values = [
                value
                for value in event.summary.value
                if keep(value.tag, event.step) and (value.tag, event.step) not in seen
            ]
            seen.update((value.tag, event.step) for value in values)
            if values:
                kept.append(Event(wall_time=event.wall_time, step=event.step, summary=Summary(value=values)))
    rewritten = log_dir / f"events.out.tfevents.{_sorts_first_stamp(files[0]):010d}.resumed"
    if kept:
        with atomic_path(rewritten) as temp_path, temp_path.open("wb") as handle:
            records = RecordWriter(handle)
            records.write(Event(wall_time=kept[0].wall_time, file_version="brain.Event:2").SerializeToString())
            for event in kept:
                records.write(event.SerializeToString())
    for path in files:
        if path != rewritten or not kept:
            path.unlink()


def _sorts_first_stamp(first_file: Path) -> int:
    """The first file's time stamp, but before this second: a writer opened from now on stamps its file with
    the current second, so the rewritten file's name sorts first even within the second the run resumed in."""
    match = re.search(r"tfevents\.(\d+)", first_file.name)
    now = int(time.time())
    return min(int(match.group(1)), now - 1) if match else now - 1


def _png_pixels(path: Path) -> np.ndarray:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
