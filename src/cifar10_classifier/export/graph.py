"""The inference graph and its ONNX file: each network's own inference form (models fold their batch norm),
test-time augmentation inside the graph, and the model card embedded as ONNX metadata."""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from cifar10_classifier.atomic import atomic_path
from cifar10_classifier.errors import UserError
from cifar10_classifier.inference import CARD_METADATA_KEY
from cifar10_classifier.training.augment import tta_views

OPSET = 17


class ExportError(UserError):
    """Export or quantization could not produce an acceptable model; the message says what to do."""


@dataclass(frozen=True)
class ExportConfig:
    out_dir: Path
    tta_level: int | None = None  # None: the recipe's own level
    calibration_images: int = 2000
    calibration_method: str = "minmax"  # minmax | entropy | percentile
    activation_type: str = "uint8"  # U8S8: what ONNX Runtime's x86 int8 convolutions are fastest with
    max_accuracy_drop: float = 0.005  # refuse an int8 model that loses more than this (0.5 points)
    allow_accuracy_drop: bool = False
    seed: int = 0


def has_features(model: nn.Module) -> bool:
    """An inference form with `features` (the penultimate vector) and a bias-free linear `head` on it: its TTA
    average can be taken on the features (the head is linear), and the off-distribution score reads them."""
    head = getattr(model, "head", None)
    return callable(getattr(model, "features", None)) and isinstance(head, nn.Linear) and head.bias is None


def has_statistics(model: nn.Module) -> bool:
    """An inference form that also reports layer statistics (`features_and_statistics`), which the
    off-distribution score reads."""
    return has_features(model) and callable(getattr(model, "features_and_statistics", None))


class TTAWrapper(nn.Module):
    """The model with its test-time augmentation views averaged inside the graph. With `with_features` it also
    returns the penultimate features (B, D), averaged over the same views: (logits, features); and, where the
    network has them, its layer statistics of the un-augmented images: (logits, features, statistics)."""

    def __init__(self, model: nn.Module, tta_level: int, with_features: bool = False):
        super().__init__()
        self.model, self.tta_level, self.with_features = model, tta_level, with_features
        self.with_statistics = with_features and has_statistics(model)
        self.output_names = ["logits", "features", "statistics"][: 1 + with_features + self.with_statistics]

    def forward(self, x: torch.Tensor):  # (B, 3, 32, 32) -> (B, 10), or ((B, 10), (B, D)) with features
        if self.with_features:
            return self._forward_with_features(x)
        views = tta_views(x, self.tta_level)
        if len(views) == 1:
            return self.model(x)
        # One batched call over all views: a single large conv per layer runs faster than several small ones.
        stacked = torch.cat([view for view, _ in views])
        logits = self.model(stacked).reshape(len(views), x.size(0), -1)
        weights = torch.tensor([w for _, w in views], dtype=logits.dtype).reshape(-1, 1, 1)  # constants in graph
        return (logits * weights).sum(0)

    def _forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        views = tta_views(x, self.tta_level)
        stacked = torch.cat([view for view, _ in views]) if len(views) > 1 else x
        if self.with_statistics:
            per_view, statistics = self.model.features_and_statistics(stacked)  # type: ignore[operator]
            statistics = statistics[: x.size(0)]  # the first view is the image itself
        else:
            per_view = self.model.features(stacked)  # type: ignore[operator]
        features = per_view
        if len(views) > 1:
            per_view = per_view.reshape(len(views), x.size(0), -1)
            weights = torch.tensor([w for _, w in views], dtype=per_view.dtype).reshape(-1, 1, 1)
            features = (per_view * weights).sum(0)  # the head is linear and bias-free: same logits as before
        logits = self.model.head(features)  # type: ignore[operator]
        return (logits, features, statistics) if self.with_statistics else (logits, features)


def inference_graph(model: nn.Module, tta_level: int, with_features: bool = False) -> nn.Module:
    """The model as it will be exported: the network's own inference form (BN folded where that helps int8
    fusion), with TTA inside; with_features adds the penultimate features as a second output where the network
    has them (see has_features)."""
    model = copy.deepcopy(model).float().eval().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    try:
        inference_form = model.inference_form()  # type: ignore[operator]
    except ValueError as error:
        raise ExportError(f"this model cannot be exported: {error}") from error
    return TTAWrapper(inference_form, tta_level, with_features and has_features(inference_form)).eval()


def export_onnx(module: nn.Module, path: Path, card: dict) -> None:
    """The module to ONNX: output "logits", and "features" and "statistics" when the module returns them too."""
    import onnx

    output_names = list(getattr(module, "output_names", ["logits"]))
    example = torch.zeros(1, 3, 32, 32)
    with atomic_path(path) as temp_path, torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no extra packages; its warnings are noise here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(temp_path),
            input_names=["input"],
            output_names=output_names,
            dynamic_axes={"input": {0: "batch"}, **{name: {0: "batch"} for name in output_names}},
            opset_version=OPSET,
            dynamo=False,
        )
        embed_card(temp_path, card)
        onnx.checker.check_model(str(temp_path))


def embed_card(path: Path, card: dict) -> None:
    """Replace the card in the ONNX file's metadata, through a temporary file: the good file stays until then."""
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {CARD_METADATA_KEY: json.dumps(card)})
    with atomic_path(path) as temp_path:
        onnx.save(model, str(temp_path))
