"""ONNX export and int8 post-training quantization.

`export_run` writes model-fp32.onnx (dynamic batch) and model-int8.onnx (static QDQ quantization with ONNX
Runtime, per-channel weights, calibrated on training images only), each with the model card embedded as ONNX
metadata and written as JSON beside it. Test-time augmentation is folded into the graph, so the served accuracy
is the evaluated one. Both files are evaluated on the test split; an int8 model that loses more than the allowed
accuracy is refused unless the caller says otherwise.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cifar10_classifier.atomic import atomic_path, atomic_write_text
from cifar10_classifier.inference import CARD_METADATA_KEY
from cifar10_classifier.models.fast_net import ConvBlock, FastNet
from cifar10_classifier.preprocess import normalize
from cifar10_classifier.training.augment import tta_views

FP32_NAME = "model-fp32.onnx"
INT8_NAME = "model-int8.onnx"
OPSET = 17


class ExportError(Exception):
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


class TTAWrapper(nn.Module):
    """The model with its test-time augmentation views averaged inside the graph."""

    def __init__(self, model: nn.Module, tta_level: int):
        super().__init__()
        self.model, self.tta_level = model, tta_level

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) -> (B, 10)
        views = tta_views(x, self.tta_level)
        if len(views) == 1:
            return self.model(x)
        # One batched call over all views: a single large conv per layer runs faster than several small ones.
        stacked = torch.cat([view for view, _ in views])
        logits = self.model(stacked).reshape(len(views), x.size(0), -1)
        weights = torch.tensor([w for _, w in views], dtype=logits.dtype).reshape(-1, 1, 1)  # constants in graph
        return (logits * weights).sum(0)


class _FusedBlock(nn.Module):
    """A FastNet block with BN folded into the convs: conv -> act -> pool -> conv -> act (ReLU commutes with
    max-pool, and scale-free BN has a positive scale, so the order change is exact)."""

    def __init__(self, block: ConvBlock):
        super().__init__()
        self.conv1 = _fold_bn(block.conv1, block.norm1)
        self.conv2 = _fold_bn(block.conv2, block.norm2)
        self.relu = isinstance(block.act, nn.ReLU)
        self.act = block.act

    def forward(self, x):
        x = F.max_pool2d(self.act(self.conv1(x)), 2) if self.relu else self.act(F.max_pool2d(self.conv1(x), 2))
        return self.act(self.conv2(x))


class _FusedFastNet(nn.Module):
    def __init__(self, model: FastNet):
        super().__init__()
        self.whiten = copy.deepcopy(model.whiten)
        self.act = model.act
        self.blocks = nn.Sequential(*[_FusedBlock(block) for block in model.blocks])
        self.head = nn.Linear(model.head.in_features, model.head.out_features, bias=False)
        self.head.weight.data = model.head.weight.data * model.config.logit_scale

    def forward(self, x):
        x = self.blocks(self.act(self.whiten(x)))
        return self.head(torch.amax(x, dim=(2, 3)))


def _fold_bn(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # (C,)
    if (scale <= 0).any():
        raise ExportError("a batch-norm scale is not positive; it cannot be folded through max-pooling")
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding, bias=True)
    fused.weight.data = conv.weight.data * scale[:, None, None, None]
    conv_bias = conv.bias.data if conv.bias is not None else torch.zeros_like(norm.running_mean)
    fused.bias.data = (conv_bias - norm.running_mean) * scale + norm.bias.data
    return fused


def inference_graph(model: nn.Module, tta_level: int) -> nn.Module:
    """The model as it will be exported: BN folded where that helps int8 fusion, TTA inside."""
    model = copy.deepcopy(model).float().eval().to(memory_format=torch.contiguous_format)
    if isinstance(model, FastNet):
        model = _FusedFastNet(model)
    return TTAWrapper(model, tta_level).eval()


def export_onnx(module: nn.Module, path: Path, card: dict) -> None:
    import onnx

    example = torch.zeros(1, 3, 32, 32)
    with atomic_path(path) as temp_path, torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no extra packages; its warnings are noise here.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(temp_path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        embed_card(temp_path, card)
        onnx.checker.check_model(str(temp_path))


def embed_card(path: Path, card: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {CARD_METADATA_KEY: json.dumps(card)})
    onnx.save(model, str(path))


QUANTIZED_OP_TYPES = ["Conv", "MatMul", "Gemm", "MaxPool", "Relu"]


class _CalibrationReader:
    """Feeds normalised training images to ONNX Runtime's calibrator, a batch at a time."""

    def __init__(self, images_float32: np.ndarray, batch_size: int = 100):
        self.batches = iter([images_float32[i : i + batch_size] for i in range(0, len(images_float32), batch_size)])

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {"input": batch}


def quantize_int8(
    fp32_path: Path, int8_path: Path, calibration_float32: np.ndarray, config: ExportConfig, work_dir: Path
) -> None:
    """Static QDQ quantization of fp32_path into int8_path (a path in a scratch folder; the caller renames)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    import onnx

    prepared = work_dir / "prepared.onnx"
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    # The whitening conv amplifies the finest image detail ~30x, so 8-bit rounding of its input and weights
    # destroys the signal (measured: 61% -> 15% on a small model). It is 0.2% of the FLOPs: keep it in fp32.
    keep_fp32 = [node.name for node in onnx.load(str(prepared)).graph.node if "whiten" in node.name]
    quantize_static(
        str(prepared),
        str(int8_path),
        _CalibrationReader(calibration_float32),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8 if config.activation_type == "uint8" else QuantType.QInt8,
        calibrate_method=methods[config.calibration_method],
        nodes_to_exclude=keep_fp32,
        # Only the compute ops and ReLU: quantizing the TTA plumbing (Pad/Slice/Concat on the input) would put
        # the whitening conv's input through 8-bit rounding again. ReLU must be in the list: then the quantizer
        # drops it into the conv's uint8 output (zero point 0 clips at zero) and ONNX Runtime runs conv -> pool
        # in uint8 end to end; without it every conv output was dequantized, ReLU'd in fp32 and quantized again
        # (measured on the bundled model: 2,323 -> 2,774 img/s at batch 256).
        op_types_to_quantize=QUANTIZED_OP_TYPES,
        extra_options={"ActivationSymmetric": config.activation_type != "uint8"},
    )


def onnx_accuracy(path: Path, images_uint8: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    from cifar10_classifier.inference import Predictor

    predictor = Predictor(path)
    correct = 0
    for start in range(0, len(labels), batch_size):
        probabilities = predictor.predict_images(images_uint8[start : start + batch_size])
        correct += int((probabilities.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / len(labels)


def export_run(
    run: Path, data_source: str | None, config: ExportConfig, *, cache_dir: Path | None = None, log=print
) -> dict:
    """Export a trained run to fp32 and int8 ONNX in config.out_dir -> a summary with both accuracies."""
    from cifar10_classifier.data import load_dataset, stratified_split
    from cifar10_classifier.models.weights import load_weights

    model, card = load_weights(run)
    tta_level = card.get("tta_level", 0) if config.tta_level is None else config.tta_level
    dataset = load_dataset(data_source or card.get("data", {}).get("source"), cache_dir=cache_dir)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    graph = inference_graph(model, tta_level)
    export_card = {**card, "tta_level": tta_level, "source_run": str(run), "exported": time.strftime("%Y-%m-%d")}

    fp32_path, int8_path = out_dir / FP32_NAME, out_dir / INT8_NAME
    export_onnx(graph, fp32_path, {**export_card, "format": "onnx-fp32"})
    test_images, test_labels = np.asarray(dataset.test.images_uint8), np.asarray(dataset.test.labels)
    fp32_accuracy = onnx_accuracy(fp32_path, test_images, test_labels)
    log(f"fp32 ONNX test accuracy {fp32_accuracy:.4f}")

    # Calibrate on training images only (a seeded, class-balanced draw), never on test images.
    _, calibration_indices = stratified_split(
        dataset.train.labels, config.calibration_images / len(dataset.train.labels), config.seed
    )
    calibration = normalize(np.asarray(dataset.train.images_uint8)[calibration_indices])
    int8_card = {
        **export_card,
        "format": "onnx-int8",
        "quantization": {
            "format": "QDQ",
            "weights": "int8 per-channel",
            "activations": config.activation_type,
            "calibration": config.calibration_method,
            "calibration_images": len(calibration_indices),
            "quantized_ops": QUANTIZED_OP_TYPES,
            "kept_fp32": "the whitening conv",
        },
    }
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as work:
        candidate = Path(work) / INT8_NAME
        quantize_int8(fp32_path, candidate, calibration, config, Path(work))
        int8_accuracy = onnx_accuracy(candidate, test_images, test_labels)
        log(f"int8 ONNX test accuracy {int8_accuracy:.4f} ({(int8_accuracy - fp32_accuracy) * 100:+.2f} points)")
        drop = fp32_accuracy - int8_accuracy
        if drop > config.max_accuracy_drop and not config.allow_accuracy_drop:
            raise ExportError(
                f"int8 model loses {drop * 100:.2f} points (fp32 {fp32_accuracy:.4f} -> int8 {int8_accuracy:.4f}), "
                f"more than {config.max_accuracy_drop * 100:.1f}; try --calibration entropy or percentile, or pass "
                "--allow-accuracy-drop to write it anyway"
            )
        int8_card["accuracy"] = {**card.get("accuracy", {}), "onnx_fp32": fp32_accuracy, "onnx_int8": int8_accuracy}
        embed_card(candidate, int8_card)
        os.replace(candidate, int8_path)
    fp32_card = {
        **export_card,
        "format": "onnx-fp32",
        "accuracy": {**card.get("accuracy", {}), "onnx_fp32": fp32_accuracy},
    }
    embed_card(fp32_path, fp32_card)
    atomic_write_text(fp32_path.with_suffix(".json"), json.dumps(fp32_card, indent=2))
    atomic_write_text(int8_path.with_suffix(".json"), json.dumps(int8_card, indent=2))
    return {
        "fp32": str(fp32_path),
        "int8": str(int8_path),
        "fp32_accuracy": fp32_accuracy,
        "int8_accuracy": int8_accuracy,
        "tta_level": tta_level,
    }
