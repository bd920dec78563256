"""Networks, looked up by name. Each model file holds one network, the dataclass of its hyperparameters, and its
inference form (`model.inference_form()`: the same function as export wants it, e.g. with BN folded)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields

import torch.nn as nn

from cifar10_classifier.errors import UserError

_REGISTRY: dict[str, tuple[type, Callable[..., nn.Module]]] = {}


def register_model(name: str, config_class: type):
    """Decorator: make `create_model(name, **overrides)` build this network from its config dataclass."""

    def wrap(builder: Callable[..., nn.Module]):
        _REGISTRY[name] = (config_class, builder)
        return builder

    return wrap


class ModelConfigError(UserError, ValueError):
    """A model name or model_config that builds no network; the message names what is wrong."""


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def model_config(name: str, **overrides):
    if name not in _REGISTRY:
        raise ModelConfigError(f"unknown model {name!r}; known: {', '.join(model_names())}")
    config_class, _ = _REGISTRY[name]
    known = {f.name for f in fields(config_class)}
    unknown = set(overrides) - known
    if unknown:
        raise ModelConfigError(f"model {name!r} has no settings {sorted(unknown)}; it has {sorted(known)}")
    return config_class(**overrides)


def create_model(name: str, **overrides) -> nn.Module:
    config = model_config(name, **overrides)
    try:
        return _REGISTRY[name][1](config)
    except (TypeError, ValueError) as error:  # e.g. 2 widths but 3 dropout rates
        raise ModelConfigError(f"model {name!r} cannot be built from model_config {overrides}: {error}") from error


def config_dict(config) -> dict:
    return asdict(config)


# Importing the model files fills the registry.
from cifar10_classifier.models import classic_net, fast_net  # noqa: E402, F401
