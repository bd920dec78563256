"""Trained weights as safetensors plus a JSON card. Nothing here unpickles a file from someone else."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cifar10_classifier.atomic import atomic_path, atomic_write_text
from cifar10_classifier.models import create_model

WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "model.json"


class WeightsError(Exception):
    """Weights or card missing or damaged; the message says what to do."""


def save_weights(model: torch.nn.Module, folder: Path, card: dict) -> None:
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_NAME) as temp_path:
        save_file(state, str(temp_path))
    atomic_write_text(folder / CARD_NAME, json.dumps(card, indent=2))


def resolve_weights_folder(path: Path) -> Path:
    """A run folder or a weights file -> the folder holding model.safetensors and model.json."""
    path = Path(path)
    folder = path.parent if path.is_file() else path
    if not (folder / WEIGHTS_NAME).is_file():
        raise WeightsError(f"{folder}: no {WEIGHTS_NAME}; pass a finished run folder (train it with `cifar10 train`)")
    if not (folder / CARD_NAME).is_file():
        raise WeightsError(f"{folder}: no {CARD_NAME} card beside the weights; re-run training or export")
    return folder


def load_weights(path: Path) -> tuple[torch.nn.Module, dict]:
    """-> (model in eval mode, card)."""
    folder = resolve_weights_folder(path)
    try:
        card = json.loads((folder / CARD_NAME).read_text())
        model = create_model(card["model"], **card.get("model_config", {}))
        model.load_state_dict(load_file(str(folder / WEIGHTS_NAME)))
    except Exception as error:
        raise WeightsError(f"{folder}: damaged weights or card ({error}); re-run training") from error
    return model.eval(), card
