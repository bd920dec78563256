"""Calibration and the off-distribution score, fitted on each exported graph's own outputs and baked into it.

The stage graph has outputs "logits" and, for networks that have them, "features" (the penultimate vector the head
sees) and "statistics" (the channel means of the first two blocks' activations). For each file
(fp32, and the int8 candidate that is served) this fits, on that file's own outputs:

- the temperature T on held-out training images, baked in as a Div: "logits" becomes logits / T, so the
  Predictor's softmax is the calibrated probability with no serving-side change;
- the off-distribution score, output "ood_score" (higher = more off-distribution), and its threshold, the score
  at which 95% of the held-out images are kept (score <= threshold: in distribution). The score is the
  Mahalanobis distance of the layer statistics to their training distribution (one Gaussian, fitted on other
  training images: a Sub, a MatMul, a ReduceSumSquare and a Sqrt); for a network with features but no statistics,
  minus the features' L2 norm; without either, the energy -logsumexp(logits / T). The extra outputs are dropped.

The layer statistics were chosen by measurement (bench/ood.py on the bundled fast-large int8 model, numbers in
docs/experiments.md): images of no class have other textures and edges in other proportions than CIFAR-10's,
which the early layers see before the max-pools discard it, so they flag the patch-shuffled images the
penultimate features' norm (the next best) lets through, as well as every noise, flat-colour and gradient image.
The means are int8 global average pools inside the quantized graph; the distance's few nodes run in fp32 after
it. The test split is only reported on (ECE before and after, the share of test images kept), never fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar10_classifier import calibration as cal

OOD_OUTPUT = "ood_score"
FEATURES_OUTPUT = "features"
STATISTICS_OUTPUT = "statistics"


def run_outputs(path: Path, inputs_float32: np.ndarray, batch_size: int = 500) -> dict[str, np.ndarray]:
    """Every output of an ONNX file over normalized images, batch by batch -> {name: (N, ...)}."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for start in range(0, len(inputs_float32), batch_size):
        batch = np.ascontiguousarray(inputs_float32[start : start + batch_size], np.float32)
        for name, value in zip(names, session.run(names, {"input": batch}), strict=True):
            parts[name].append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


@dataclass(frozen=True)
class FitImages:
    """Normalized images for each fit, all from the training split, and the test split to report on."""

    held_out: np.ndarray  # T and the threshold
    held_out_labels: np.ndarray
    held_out_description: str
    held_out_split: dict  # {"val_fraction", "seed"}: calibration.held_out_for_calibration rebuilds the indices
    test: np.ndarray
    test_labels: np.ndarray
    statistics_fit: np.ndarray | None = None  # other training images: the layer statistics' mean and covariance
    statistics_fit_description: str = ""


def fit_served_outputs(stage_path: Path, images: FitImages) -> dict:
    """Fit T and the detector's threshold on this graph's logits -> what to bake in and what the card records."""
    held = run_outputs(stage_path, images.held_out)
    test = run_outputs(stage_path, images.test)
    temperature = cal.fit_temperature(held["logits"], images.held_out_labels)
    result = {
        "temperature": temperature,
        "calibration": {
            "temperature": temperature,
            "fit_on": images.held_out_description,
            "held_out_split": images.held_out_split,
            "method": "one temperature minimising the NLL (golden-section search on log T)",
            "ece_before": cal.expected_calibration_error(cal.softmax(test["logits"]), images.test_labels),
            "ece_after": cal.expected_calibration_error(cal.softmax(test["logits"] / temperature), images.test_labels),
            "bins": cal.ECE_BINS,
            "ece_on": f"{len(images.test_labels)} test images (reported only)",
        },
    }
    extra: dict = {}
    if STATISTICS_OUTPUT in held and images.statistics_fit is not None:
        detector = "layer_statistics"
        description = "Mahalanobis distance of the first two blocks' channel means to those of training images"
        fit_statistics = run_outputs(stage_path, images.statistics_fit)[STATISTICS_OUTPUT]
        gaussian = cal.fit_gaussian(fit_statistics)
        result["statistics_gaussian"] = gaussian
        held_scores = cal.gaussian_distance_score(held[STATISTICS_OUTPUT], gaussian)
        test_scores = cal.gaussian_distance_score(test[STATISTICS_OUTPUT], gaussian)
        extra = {"gaussian_fit_on": images.statistics_fit_description, "dimensions": int(fit_statistics.shape[1])}
    elif FEATURES_OUTPUT in held:
        detector, description = "feature_norm", "minus the L2 norm of the penultimate (max-pooled) features"
        held_scores, test_scores = (
            cal.feature_norm_score(held[FEATURES_OUTPUT]),
            cal.feature_norm_score(test[FEATURES_OUTPUT]),
        )
    else:
        detector, description = "energy", "energy -logsumexp(logits / T) of the calibrated logits"
        held_scores = cal.energy_score(held["logits"] / temperature)
        test_scores = cal.energy_score(test["logits"] / temperature)
    threshold = cal.threshold_at_keep_rate(held_scores)
    result["ood"] = {
        "detector": detector,
        "output": OOD_OUTPUT,
        "score": f"{description}; higher = more off-distribution",
        "threshold": threshold,
        "in_distribution": f"{OOD_OUTPUT} <= threshold",
        "keep_rate_target": cal.KEEP_RATE,
        "threshold_fit_on": images.held_out_description,
        "test_kept": float((test_scores <= threshold).mean()),
        "chosen_by": "bench/ood.py (MSP, energy, Mahalanobis, the feature norm and layer statistics compared)",
        **extra,
    }
    return result


def bake_outputs(path: Path, fitted: dict) -> None:
    """Rewrite the graph in place (through a temporary file): "logits" divided by T, and "ood_score" added in
    place of "statistics" and "features" (or from the logits without them)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cifar10_classifier.atomic import atomic_path

    model = onnx.load(str(path))
    graph = model.graph
    rename_tensor(graph, "logits", "logits_uncalibrated")
    graph.initializer.append(numpy_helper.from_array(np.array(fitted["temperature"], np.float32), "temperature"))
    graph.node.append(
        helper.make_node("Div", ["logits_uncalibrated", "temperature"], ["logits"], name="calibration_div")
    )
    detector = fitted["ood"]["detector"]
    if detector == "layer_statistics":
        gaussian = fitted["statistics_gaussian"]
        graph.initializer.extend(
            [
                numpy_helper.from_array(gaussian["whiten"].astype(np.float32), "ood_whiten"),
                numpy_helper.from_array(gaussian["means"][0].astype(np.float32), "ood_whitened_mean"),
            ]
        )
        graph.node.extend(
            [
                helper.make_node("MatMul", [STATISTICS_OUTPUT, "ood_whiten"], ["ood_whitened"], name="ood_whiten"),
                helper.make_node("Sub", ["ood_whitened", "ood_whitened_mean"], ["ood_centred"], name="ood_centre"),
                helper.make_node(
                    "ReduceSumSquare", ["ood_centred"], ["ood_squared"], name="ood_squared", axes=[1], keepdims=0
                ),
                helper.make_node("Sqrt", ["ood_squared"], [OOD_OUTPUT], name="ood_distance"),
            ]
        )
    else:
        if detector == "feature_norm":
            reduce = helper.make_node(
                "ReduceL2", [FEATURES_OUTPUT], ["ood_norm"], name="ood_norm", axes=[1], keepdims=0
            )
        else:
            reduce = helper.make_node("ReduceLogSumExp", ["logits"], ["ood_norm"], name="ood_lse", axes=[1], keepdims=0)
        graph.node.extend([reduce, helper.make_node("Neg", ["ood_norm"], [OOD_OUTPUT], name="ood_neg")])
    for output in list(graph.output):
        if output.name == "logits_uncalibrated":
            output.name = "logits"
        elif output.name in (FEATURES_OUTPUT, STATISTICS_OUTPUT):
            graph.output.remove(output)
    graph.output.append(helper.make_tensor_value_info(OOD_OUTPUT, TensorProto.FLOAT, ["batch"]))
    onnx.checker.check_model(model)
    with atomic_path(path) as temp_path:
        onnx.save(model, str(temp_path))


def rename_tensor(graph, old: str, new: str) -> None:
    for node in graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
        node.input[:] = [new if name == old else name for name in node.input]
    for output in graph.output:
        if output.name == old:
            output.name = new
