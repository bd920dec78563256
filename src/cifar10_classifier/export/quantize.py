"""int8 post-training quantization with ONNX Runtime: static QDQ, per-channel weights, calibrated on training
images only; and the accuracy of an ONNX file on labelled images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cifar10_classifier.export.graph import ExportConfig

# GlobalAveragePool: the off-distribution statistics, which then run on the uint8 activations (no fp32 copy of them).
QUANTIZED_OP_TYPES = ["Conv", "MatMul", "Gemm", "MaxPool", "Relu", "GlobalAveragePool"]


class _CalibrationReader:
    """Feeds normalized training images to ONNX Runtime's calibrator, a batch at a time."""

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
