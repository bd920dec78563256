"""A run's checkpoint: the training state that resumes a run to the same result, written atomically and read
without unpickling code. Where it lives is the run folder's business (runs.RunFolder)."""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cifar10_classifier.atomic import atomic_path
from cifar10_classifier.runs import RunFolderError
from cifar10_classifier.training.distributed import DistributedContext, main_decides


@dataclass
class TrainState:
    """Everything a checkpoint needs to continue a run to the same result."""

    epoch: int = 0  # epochs completed
    history: list[dict] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    best_model_state: dict | None = None
    epochs_since_best: int = 0
    lr_scale: float = 1.0  # for the plateau schedule
    plateau_wait: int = 0
    train_seconds: float = 0.0
    lookahead_average: dict | None = None  # the running average of the weights, when the recipe uses lookahead


class _DeferInterrupts:
    """Hold Ctrl-C while a checkpoint is written, then deliver it: an interrupt never cuts a save in half."""

    def __enter__(self):
        self.pending = False
        try:
            self.previous = signal.signal(signal.SIGINT, self._remember)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def _remember(self, *_):
        self.pending = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            if self.pending:
                raise KeyboardInterrupt


_TENSOR_STATE = ("best_model_state", "lookahead_average")  # TrainState fields that hold weights


def save_checkpoint(path: Path, model, optimizer, state: TrainState, generator: torch.Generator) -> None:
    payload = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "state": {k: v for k, v in state.__dict__.items() if k not in _TENSOR_STATE},
        **{k: getattr(state, k) for k in _TENSOR_STATE},
    }
    with _DeferInterrupts(), atomic_path(path) as temp_path:
        torch.save(payload, temp_path)


def _unresumable(path: Path, error: Exception) -> RunFolderError:
    return RunFolderError(f"{path}: cannot resume from this checkpoint ({error}); start again with --force")


def _read_checkpoint(path: Path) -> dict:
    try:
        # weights_only: a checkpoint is data, never code, even if someone else wrote it.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise _unresumable(path, error) from error


def load_checkpoint(
    path: Path, model, optimizer, generator: torch.Generator, dist: DistributedContext | None = None
) -> TrainState:
    # Rank 0 reads the file and sends it to the others: only its machine needs the run folder.
    payload = main_decides(dist or DistributedContext(), lambda: _read_checkpoint(path))
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        generator.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
        state = TrainState(**payload["state"])
        for key in _TENSOR_STATE:
            setattr(state, key, payload.get(key))
    except Exception as error:
        raise _unresumable(path, error) from error
    return state
