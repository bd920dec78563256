"""Trained weights as safetensors plus a JSON card, in a run folder. Nothing here unpickles a file from someone
else."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from cifar10_classifier.atomic import atomic_path
from cifar10_classifier.models import create_model
from cifar10_classifier.runs import RunFolder, RunFolderError


def save_weights(model: torch.nn.Module, run: RunFolder, card: dict) -> None:
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    with atomic_path(run.weights) as temp_path:
        save_file(state, str(temp_path))
    run.write_card(card)


def load_weights(path: Path | RunFolder) -> tuple[torch.nn.Module, dict]:
    """A run folder (or its weights file) -> (model in eval mode, card)."""
    run = path if isinstance(path, RunFolder) else RunFolder.of_weights(path)
    try:
        card = run.read_card()
        model = create_model(card["model"], **card.get("model_config", {}))
        model.load_state_dict(load_file(str(run.weights)))
    except Exception as error:
        raise RunFolderError(f"{run.path}: damaged weights or card ({error}); re-run training") from error
    return model.eval(), card
