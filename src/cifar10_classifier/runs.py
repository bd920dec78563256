"""A run folder: the one place that knows its layout, and its typed reads and writes. Torch-free.

    RUN/config.json        the resolved recipe, data, precision and world size (written when training starts)
    RUN/history.json       one row per epoch
    RUN/checkpoint.pt      the state that resumes the run (training.checkpoints reads and writes it)
    RUN/model.safetensors  the final weights, and RUN/model.json their card (models.weights)
    RUN/metrics.json       test metrics; curves.png, confusion.png, calibration.png, mistakes.png; report.md
    RUN/export/            model-fp32.onnx and model-int8.onnx, each with its card beside it
    RUN/tensorboard/       TensorBoard event files of the training (training.tensorboard_log)

Every write goes to a temporary name and is renamed: a crash never leaves half a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifar10_classifier.atomic import atomic_write_text
from cifar10_classifier.errors import UserError

# The two files an export writes (into RUN/export/ unless told otherwise), each with its card as .json beside it.
FP32_NAME = "model-fp32.onnx"
INT8_NAME = "model-int8.onnx"


class RunFolderError(UserError):
    """The run folder exists and would be overwritten, or it lacks what a job needs; the message says what to do."""


@dataclass(frozen=True)
class RunFolder:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of_weights(cls, path: Path | str) -> RunFolder:
        """A run folder or a weights file in one -> the folder, checked to hold weights and their card."""
        path = Path(path)
        run = cls(path.parent if path.is_file() else path)
        if not run.weights.is_file():
            raise RunFolderError(
                f"{run.path}: no {run.weights.name}; pass a finished run folder (train it with `cifar10 train`)"
            )
        if not run.card.is_file():
            raise RunFolderError(f"{run.path}: no {run.card.name} card beside the weights; re-run training or export")
        return run

    # The layout
    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def history(self) -> Path:
        return self.path / "history.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def weights(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def card(self) -> Path:
        return self.path / "model.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    @property
    def curves_plot(self) -> Path:
        return self.path / "curves.png"

    @property
    def confusion_plot(self) -> Path:
        return self.path / "confusion.png"

    @property
    def calibration_plot(self) -> Path:
        return self.path / "calibration.png"

    @property
    def mistakes_plot(self) -> Path:
        return self.path / "mistakes.png"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    def prepare(self, resume: bool, force: bool) -> bool:
        """-> True when there is a checkpoint to resume from. Never overwrites a run without --resume or --force."""
        if resume:
            if not self.checkpoint.is_file():
                raise self.nothing_to_resume()
            return True
        if self.path.exists() and any(self.path.iterdir()) and not force:
            raise RunFolderError(
                f"{self.path}: run folder exists; pass --resume to continue it or --force to start over"
            )
        if force and self.checkpoint.exists():
            self.checkpoint.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        return False

    def nothing_to_resume(self) -> RunFolderError:
        if self.path.is_dir() and any(self.path.iterdir()):
            # Stopped before its first epoch ended: its config is written, so a plain start would be refused too.
            return RunFolderError(
                f"{self.path}: nothing to resume (no {self.checkpoint.name}: the run stopped before its first "
                "epoch ended); start it again with --force instead of --resume"
            )
        return RunFolderError(
            f"{self.path}: nothing to resume (no {self.checkpoint.name}); drop --resume to start anew"
        )

    # Typed reads and writes
    def write_config(self, config: dict[str, Any]) -> None:
        _write_json(self.config, config, indent=2)

    def read_config(self) -> dict[str, Any] | None:
        """The run's config, or None for a folder without one (weights copied by hand, or an older run)."""
        return dict(_read_json(self.config)) if self.config.is_file() else None

    def write_history(self, history: list[dict[str, Any]]) -> None:
        _write_json(self.history, history, indent=1)

    def read_history(self) -> list[dict[str, Any]]:
        return list(_read_json(self.history)) if self.history.is_file() else []

    def write_card(self, card: dict[str, Any]) -> None:
        _write_json(self.card, card, indent=2)

    def read_card(self) -> dict[str, Any]:
        return dict(_read_json(self.card))

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        _write_json(self.metrics, metrics, indent=1)

    def read_metrics(self) -> dict[str, Any]:
        return dict(_read_json(self.metrics))

    def recipe_value(self, key: str, default: Any) -> Any:
        """One field of the recipe the run trained with (e.g. its eval_batch_size), or `default` without one."""
        config = self.read_config() or {}
        value = config.get("recipe", {}).get(key, default)
        return type(default)(value) if default is not None and value is not None else value


def _write_json(path: Path, value: Any, indent: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(value, indent=indent))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{path}: unreadable ({error}); re-run the job that writes it") from error
