"""Calibration and the off-distribution score, fitted on each exported graph's own outputs and baked into it.

An exported stage graph has outputs "logits" and "features" (the penultimate vector the head sees). For each file
(fp32, and the int8 candidate that is served) this fits, on that file's own outputs:

- the temperature T on held-out training images, baked in as a Div: "logits" becomes logits / T, so the
  Predictor's softmax is the calibrated probability with no serving-side change;
- class means and a shared covariance of the features on training images, baked in as two MatMuls:
  z = f @ W (W W^T = inverse covariance), d_c = ||z||^2 - 2 z.m_c + ||m_c||^2, "ood_score" = min_c d_c;
- the threshold at which 95% of the held-out images are kept (score <= threshold: in distribution).

The added nodes stay in fp32 (they are added after quantization): the distance is a difference of large
numbers, which 8-bit rounding would wreck, and it costs one (D, D) and one (D, 10) matmul per image.
The test split is only reported on (ECE before and after, the share of test images kept), never fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifar10_classifier import calibration as cal

OOD_OUTPUT = "ood_score"
FEATURES_OUTPUT = "features"


def run_outputs(path: Path, inputs_float32: np.ndarray, batch_size: int = 500) -> dict[str, np.ndarray]:
    """Every output of an ONNX file over normalised images, batch by batch -> {name: (N, ...)}."""
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
    """Normalised images for each fit, all from the training split, and the test split to report on."""

    held_out: np.ndarray  # T and the threshold
    held_out_labels: np.ndarray
    held_out_description: str
    means: np.ndarray  # class means and covariance
    means_labels: np.ndarray
    means_description: str
    test: np.ndarray
    test_labels: np.ndarray


def fit_served_outputs(stage_path: Path, images: FitImages) -> dict:
    """Fit T (and the detector, when the stage graph has features) on this graph's outputs -> what to bake in
    and what the card records."""
    held = run_outputs(stage_path, images.held_out)
    test = run_outputs(stage_path, images.test)
    temperature = cal.fit_temperature(held["logits"], images.held_out_labels)
    result = {
        "temperature": temperature,
        "calibration": {
            "temperature": temperature,
            "fit_on": images.held_out_description,
            "method": "one temperature minimising the NLL (golden-section search on log T)",
            "ece_before": cal.expected_calibration_error(cal.softmax(test["logits"]), images.test_labels),
            "ece_after": cal.expected_calibration_error(cal.softmax(test["logits"] / temperature), images.test_labels),
            "bins": cal.ECE_BINS,
            "ece_on": f"{len(images.test_labels)} test images (reported only)",
        },
    }
    if FEATURES_OUTPUT not in held:
        return result
    means_features = run_outputs(stage_path, images.means)[FEATURES_OUTPUT]
    fitted = cal.fit_mahalanobis(means_features, images.means_labels)
    held_scores = cal.mahalanobis_score(held[FEATURES_OUTPUT], fitted["whiten"], fitted["means"])
    threshold = cal.threshold_at_keep_rate(held_scores)
    test_scores = cal.mahalanobis_score(test[FEATURES_OUTPUT], fitted["whiten"], fitted["means"])
    result["mahalanobis"] = fitted
    result["ood"] = {
        "detector": "mahalanobis",
        "output": OOD_OUTPUT,
        "score": "min over the classes of the squared Mahalanobis distance of the penultimate features to the "
        "class mean (shared covariance); higher = more off-distribution",
        "threshold": threshold,
        "in_distribution": f"{OOD_OUTPUT} <= threshold",
        "keep_rate_target": cal.KEEP_RATE,
        "threshold_fit_on": images.held_out_description,
        "means_fit_on": images.means_description,
        "test_kept": float((test_scores <= threshold).mean()),
        "features": int(means_features.shape[1]),
    }
    return result


def bake_outputs(path: Path, fitted: dict) -> None:
    """Rewrite the graph in place (through a temporary file): "logits" divided by T, and with a detector the
    "ood_score" output replacing "features"."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from cifar10_classifier.atomic import atomic_path

    model = onnx.load(str(path))
    graph = model.graph
    rename_tensor(graph, "logits", "logits_uncalibrated")
    initializers = [numpy_helper.from_array(np.array(fitted["temperature"], np.float32), "temperature")]
    nodes = [helper.make_node("Div", ["logits_uncalibrated", "temperature"], ["logits"], name="calibration_div")]
    outputs = {output.name: output for output in graph.output}
    outputs["logits_uncalibrated"].name = "logits"
    if "mahalanobis" in fitted and FEATURES_OUTPUT in outputs:
        whiten = fitted["mahalanobis"]["whiten"].astype(np.float32)  # (D, D)
        means = fitted["mahalanobis"]["means"].astype(np.float32)  # (C, D)
        initializers += [
            numpy_helper.from_array(whiten, "ood_whiten"),
            numpy_helper.from_array(np.ascontiguousarray((-2 * means).T), "ood_means_t2"),  # (D, C)
            numpy_helper.from_array((means.astype(np.float64) ** 2).sum(1).astype(np.float32), "ood_means_sq"),
            numpy_helper.from_array(np.array([1], np.int64), "ood_axis"),
        ]
        nodes += [
            helper.make_node("MatMul", [FEATURES_OUTPUT, "ood_whiten"], ["ood_z"], name="ood_whiten_matmul"),
            helper.make_node("Mul", ["ood_z", "ood_z"], ["ood_z2"], name="ood_square"),
            helper.make_node("ReduceSum", ["ood_z2", "ood_axis"], ["ood_norm"], name="ood_norm", keepdims=1),
            helper.make_node("Gemm", ["ood_z", "ood_means_t2", "ood_means_sq"], ["ood_cross"], name="ood_gemm"),
            helper.make_node("Add", ["ood_cross", "ood_norm"], ["ood_distances"], name="ood_add"),
            helper.make_node("ReduceMin", ["ood_distances"], [OOD_OUTPUT], name="ood_min", axes=[1], keepdims=0),
        ]
        graph.output.remove(outputs[FEATURES_OUTPUT])
        graph.output.append(helper.make_tensor_value_info(OOD_OUTPUT, TensorProto.FLOAT, ["batch"]))
    graph.initializer.extend(initializers)
    graph.node.extend(nodes)
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
