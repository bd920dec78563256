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


# A checkpoint that reads but does not fit: the run folder's recipe is what no longer matches, never the checkpoint.
_CONFIG_NO_LONGER_MATCHES = (
    "the run's config.json no longer describes this checkpoint (edited, or another version of the model code): "
    "restore it, or for a run without one repeat its --recipe and --set flags"
)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _read_checkpoint(path: Path) -> dict:
    try:
        # weights_only: a checkpoint is data, never code, even if someone else wrote it.
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or "model" not in payload:
            raise ValueError("not a training checkpoint")
        return payload
    except Exception as error:
        # Only here is the checkpoint itself unusable, so only here does the advice start the run over.
        raise RunFolderError(
            f"{path}: the checkpoint cannot be read ({_first_line(error)}); start the run again with --force, "
            "or train into another --out"
        ) from error


def state_dict_mismatch(saved: dict, expected: dict) -> str | None:
    """How a saved state dict differs from a model's, in one line (None: it fits)."""
    missing = [key for key in expected if key not in saved]
    unexpected = [key for key in saved if key not in expected]
    reshaped = [key for key in expected if key in saved and tuple(saved[key].shape) != tuple(expected[key].shape)]
    parts = []
    if reshaped:
        key = reshaped[0]
        parts.append(
            f"{len(reshaped)} tensors of another shape (first: {key} is {list(saved[key].shape)} in the checkpoint, "
            f"{list(expected[key].shape)} in the model)"
        )
    if missing:
        parts.append(f"{len(missing)} missing (first: {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} not in the model (first: {unexpected[0]})")
    return "; ".join(parts) or None


def load_checkpoint(
    path: Path,
    model,
    optimizer,
    generator: torch.Generator,
    dist: DistributedContext | None = None,
    *,
    model_name: str = "the model",
) -> TrainState:
    # Rank 0 reads the file and sends it to the others: only its machine needs the run folder.
    payload = main_decides(dist or DistributedContext(), lambda: _read_checkpoint(path))
    mismatch = state_dict_mismatch(payload.get("model", {}), model.state_dict())
    if mismatch:
        # The checkpoint is fine; the model built for it is not the one that wrote it.
        raise RunFolderError(
            f"{path}: the checkpoint does not fit {model_name} as the run's recipe builds it ({mismatch}); "
            f"{_CONFIG_NO_LONGER_MATCHES}"
        )
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        generator.set_state(payload["generator"])
        torch.set_rng_state(payload["torch_rng"])
        state = TrainState(**payload["state"])
        for key in _TENSOR_STATE:
            setattr(state, key, payload.get(key))
    except Exception as error:
        raise RunFolderError(
            f"{path}: the training state in the checkpoint does not fit this recipe's optimizer or schedule "
            f"({_first_line(error)}); {_CONFIG_NO_LONGER_MATCHES}"
        ) from error
    return state
