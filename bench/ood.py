"""Off-distribution detection: which score flags images that are none of the 10 classes, measured.

    python bench/ood.py [--model src/cifar10_classifier/bundled/model-int8.onnx] [--data ../shared/datasets/...]

Candidates, each with the convention higher = more off-distribution: 1 - max softmax probability (MSP), energy
(-logsumexp of the calibrated logits), the Mahalanobis distance of the penultimate features to the nearest class
mean (shared covariance; raw, and on L2-normalized features), minus the features' L2 norm, and the Mahalanobis
distance of the first two blocks' channel means to one Gaussian fitted on training images (what the export serves).
Each gets its threshold at 95% kept on the held-out training images the export used (the card says which; never test
images), then is reported on the CIFAR-10 test split (share kept, tile accuracy) and on off-distribution sets:
uniform and Gaussian noise, flat colours, colour gradients, test images with their 4x4 or 8x8 pixel patches
shuffled, and crops of the photos in matplotlib's sample data (a portrait, a product photo, a logo: none of the
classes). Per set: the false-positive rate (share called in-distribution) at that threshold, and the AUROC against
the test split.

A model exported with a detector has it as the "ood_score" output, and its logits are already divided by T.
For an older model (no such output) the script exposes the penultimate features from the graph, fits the class
means on training images and T on the held-out ones itself, so the comparison runs on any exported model.
Writes bench/results/ood.json and ood.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DEFAULT_DATA, bench_machine, write_results
from PIL import Image

from cifar10_classifier import calibration as cal
from cifar10_classifier.data import load_dataset
from cifar10_classifier.inference import OOD_OUTPUT, Predictor, bundled_model_path
from cifar10_classifier.jobs import STATISTICS_FIT_IMAGES

CANDIDATES = ("msp", "energy", "mahalanobis", "mahalanobis_l2_normalized", "feature_norm", "layer_statistics")
STATISTICS = "statistics"  # the layer statistics tensor of graphs exported with them (export.served_outputs)
TARGET_FPR = {"synthetic": 0.20, "shuffled": 0.50, "photos": None}


# Off-distribution sets: uint8 (N, 32, 32, 3), seeded


def uniform_noise(rng, n):
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def gaussian_noise(rng, n):
    return np.clip(rng.normal(128, 64, size=(n, 32, 32, 3)), 0, 255).astype(np.uint8)


def flat_colours(rng, n):
    return np.broadcast_to(rng.integers(0, 256, size=(n, 1, 1, 3)), (n, 32, 32, 3)).astype(np.uint8)


def colour_gradients(rng, n):
    angle = rng.uniform(0, 2 * np.pi, size=(n, 1, 1, 1))
    ys, xs = np.mgrid[0:32, 0:32] / 31.0
    t = np.cos(angle) * xs[None, :, :, None] + np.sin(angle) * ys[None, :, :, None]
    t = (t - t.min(axis=(1, 2), keepdims=True)) / np.ptp(t, axis=(1, 2), keepdims=True)
    start, stop = rng.integers(0, 256, size=(2, n, 1, 1, 3))
    return (start + t * (stop - start)).round().astype(np.uint8)


def patch_shuffled(images_uint8, patch, rng):
    """Each image cut into patch x patch squares, put back in a random order: the colours and textures of the
    classes, none of their shapes."""
    n, grid = len(images_uint8), 32 // patch
    tiles = (
        images_uint8.reshape(n, grid, patch, grid, patch, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, -1, patch, patch, 3)
    )
    order = np.argsort(rng.random((n, grid * grid)), axis=1)
    tiles = np.take_along_axis(tiles, order[:, :, None, None, None], axis=1)
    return tiles.reshape(n, grid, grid, patch, patch, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, 32, 32, 3)


def sample_photos(rng, n) -> tuple[np.ndarray, list[str]]:
    """Random square crops (a quarter to all of the short side) of matplotlib's bundled sample photos, resized to
    32x32. From the installed package: no download."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "sample_data"
    names = [
        name for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png") if (folder / name).is_file()
    ]
    photos = [Image.open(folder / name).convert("RGB") for name in names]
    crops = []
    for index in range(n):
        photo = photos[index % len(photos)]
        side = int(min(photo.size) * rng.uniform(0.25, 1.0))
        left, top = rng.integers(0, photo.size[0] - side + 1), rng.integers(0, photo.size[1] - side + 1)
        crop = photo.crop((left, top, left + side, top + side)).resize((32, 32), Image.Resampling.BOX)
        crops.append(np.asarray(crop))
    return (np.stack(crops) if crops else np.zeros((0, 32, 32, 3), np.uint8)), [str(folder / n) for n in names]


# The model's outputs


def l2_normalized(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def features_model(path: Path, work: Path) -> Path:
    """A copy of an ONNX file with the penultimate features (the last ReduceMax, the global max-pool) as an extra
    output "features", for models exported without a detector."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    pools = [node for node in model.graph.node if node.op_type in ("ReduceMax", "GlobalMaxPool")]
    if not pools:
        raise SystemExit(f"{path}: no global max-pool to read penultimate features from")
    if any(STATISTICS in node.output for node in model.graph.node):
        model.graph.output.append(helper.make_tensor_value_info(STATISTICS, TensorProto.FLOAT, None))
    model.graph.output.append(helper.make_tensor_value_info(pools[-1].output[0], TensorProto.FLOAT, None))
    out = work / "with-features.onnx"
    onnx.save(model, str(out))
    return out


def without_ood(path: Path, work: Path) -> Path:
    """A copy with the ood_score output and the nodes only it needs removed: the baseline for the cost."""
    import onnx

    model = onnx.load(str(path))
    kept_outputs = [output for output in model.graph.output if output.name != OOD_OUTPUT]
    del model.graph.output[:]
    model.graph.output.extend(kept_outputs)
    needed = {output.name for output in kept_outputs}
    kept_nodes = []
    for node in reversed(model.graph.node):
        if needed & set(node.output):
            kept_nodes.append(node)
            needed |= set(node.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept_nodes))
    out = work / "without-ood.onnx"
    onnx.save(model, str(out))
    return out


def run_all(session, images_float32, names, batch=500):
    parts = {name: [] for name in names}
    for start in range(0, len(images_float32), batch):
        values = session.run(names, {"input": images_float32[start : start + batch]})
        for name, value in zip(names, values, strict=True):
            parts[name].append(value.reshape(len(value), -1) if name != OOD_OUTPUT else value)
    return {name: np.concatenate(value) for name, value in parts.items()}


def seconds_per_batch(session, batch_float32, repeats):
    session.run(None, {"input": batch_float32})
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(None, {"input": batch_float32})
        best = min(best, time.perf_counter() - started)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=bundled_model_path())
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--test-images", type=int, default=10000)
    parser.add_argument("--ood-images", type=int, default=1000, help="images per off-distribution set")
    parser.add_argument(
        "--means-images",
        type=int,
        default=STATISTICS_FIT_IMAGES,
        help="training images the class means and the layer-statistics Gaussian are fitted on (the export's number)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="ood", help="results file name under bench/results/")
    args = parser.parse_args()

    import onnxruntime as ort

    predictor = Predictor(args.model)
    card = predictor.card
    dataset = load_dataset(args.data)
    rng = np.random.default_rng(args.seed)
    train_labels = np.asarray(dataset.train.labels)
    split = (card.get("calibration") or {}).get("held_out_split") or {"val_fraction": 0.0, "seed": card.get("seed", 0)}
    held_out, held_out_description = cal.held_out_for_calibration(train_labels, split["val_fraction"], split["seed"])
    test_count = min(args.test_images, len(dataset.test.labels))
    test_images = np.asarray(dataset.test.images_uint8[:test_count])
    test_labels = np.asarray(dataset.test.labels[:test_count])

    sets = {
        "uniform noise": ("synthetic", uniform_noise(rng, args.ood_images)),
        "gaussian noise": ("synthetic", gaussian_noise(rng, args.ood_images)),
        "flat colours": ("synthetic", flat_colours(rng, args.ood_images)),
        "colour gradients": ("synthetic", colour_gradients(rng, args.ood_images)),
        "shuffled 4x4 patches": ("shuffled", patch_shuffled(test_images[: args.ood_images], 4, rng)),
        "shuffled 8x8 patches": ("shuffled", patch_shuffled(test_images[: args.ood_images], 8, rng)),
    }
    photos, photo_sources = sample_photos(rng, min(300, args.ood_images))
    if len(photos):
        sets["photos (matplotlib sample data)"] = ("photos", photos)

    # The feature-based candidates read the global max-pool, which with TTA in the graph runs on all views at once.
    candidate_names = CANDIDATES if card.get("tta_level", 0) == 0 else ("msp", "energy")
    with tempfile.TemporaryDirectory() as work:
        # The penultimate features exposed on a copy of the graph, for the Mahalanobis candidates.
        session = ort.InferenceSession(str(features_model(args.model, Path(work))), providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        logits_name, features_name = names[0], names[-1]

        def outputs(images_uint8):
            return run_all(session, predictor.normalize(images_uint8), names)

        held, test = outputs(np.asarray(dataset.train.images_uint8)[held_out]), outputs(test_images)
        # A model with the detector has T in its graph; for an older one, fit T here on the same held-out images.
        temperature = 1.0 if predictor.has_ood else cal.fit_temperature(held[logits_name], train_labels[held_out])
        if "mahalanobis" in candidate_names:
            # The export's draw (jobs._fit_images): its seed is the run's, the one the held-out split used.
            drawn = cal.draw_outside(train_labels, held_out, args.means_images, split["seed"])
            means_outputs = outputs(np.asarray(dataset.train.images_uint8)[drawn])
            means_features = means_outputs[features_name]
            mahalanobis = cal.fit_mahalanobis(means_features, train_labels[drawn])
            normalized = cal.fit_mahalanobis(l2_normalized(means_features), train_labels[drawn])
            # One Gaussian over the layer statistics, on the same draw as the export's (the same seed and size).
            if STATISTICS in means_outputs:
                statistics = cal.fit_gaussian(means_outputs[STATISTICS])
            else:
                candidate_names = tuple(name for name in candidate_names if name != "layer_statistics")

        def scores(out) -> dict[str, np.ndarray]:
            logits, features = out[logits_name] / temperature, out[features_name]
            if "mahalanobis" not in candidate_names:
                return {"msp": cal.msp_score(logits), "energy": cal.energy_score(logits)}
            return {
                "msp": cal.msp_score(logits),
                "energy": cal.energy_score(logits),
                "mahalanobis": cal.mahalanobis_score(features, mahalanobis["whiten"], mahalanobis["means"]),
                "mahalanobis_l2_normalized": cal.mahalanobis_score(
                    l2_normalized(features), normalized["whiten"], normalized["means"]
                ),
                "feature_norm": cal.feature_norm_score(features),
                **(
                    {"layer_statistics": cal.gaussian_distance_score(out[STATISTICS], statistics)}
                    if "layer_statistics" in candidate_names
                    else {}
                ),
            }

        held_scores, test_scores = scores(held), scores(test)
        set_scores = {name: scores(outputs(images)) for name, (_, images) in sets.items()}

        cost, served_check = None, None
        if predictor.has_ood:
            served_scores = run_all(session, predictor.normalize(test_images), [OOD_OUTPUT])[OOD_OUTPUT]
            served_check = {
                "detector": card["ood"]["detector"],
                "threshold_in_card": card["ood"]["threshold"],
                "test_kept_in_graph": float((served_scores <= card["ood"]["threshold"]).mean()),
                "max_abs_diff_vs_numpy": float(np.abs(served_scores - test_scores[card["ood"]["detector"]]).max())
                if card["ood"]["detector"] in test_scores
                else None,
            }
            plain = ort.InferenceSession(str(without_ood(args.model, Path(work))), providers=["CPUExecutionProvider"])
            whole = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
            cost = {}
            for batch in (1, 256):
                inputs = predictor.normalize(test_images[:batch])
                repeats = 30 if batch == 1 else 5
                with_ood, without = (
                    seconds_per_batch(whole, inputs, repeats),
                    seconds_per_batch(plain, inputs, repeats),
                )
                cost[f"batch_{batch}"] = {
                    "ms_with": with_ood * 1e3,
                    "ms_without": without * 1e3,
                    "overhead": with_ood / without - 1,
                }

    accuracy = float((test[logits_name].argmax(1) == test_labels).mean())
    candidates = {}
    for name in candidate_names:
        threshold = cal.threshold_at_keep_rate(held_scores[name])
        kept = test_scores[name] <= threshold
        per_set = {}
        for set_name, (kind, _) in sets.items():
            per_set[set_name] = {
                "kind": kind,
                "fpr": float((set_scores[set_name][name] <= threshold).mean()),
                "auroc": cal.auroc(test_scores[name], set_scores[set_name][name]),
            }
        meets = all(
            entry["fpr"] <= TARGET_FPR[entry["kind"]] for entry in per_set.values() if TARGET_FPR[entry["kind"]]
        )
        candidates[name] = {
            "threshold": threshold,
            "held_out_kept": float((held_scores[name] <= threshold).mean()),
            "test_kept": float(kept.mean()),
            "accuracy_on_kept": float((test[logits_name].argmax(1)[kept] == test_labels[kept]).mean()),
            "sets": per_set,
            "worst_fpr": max(entry["fpr"] for entry in per_set.values()),
            "mean_auroc": float(np.mean([entry["auroc"] for entry in per_set.values()])),
            "meets_targets": meets,
        }
    best = min(candidate_names, key=lambda n: (not candidates[n]["meets_targets"], -candidates[n]["mean_auroc"]))
    served = (card.get("ood") or {}).get("detector")
    payload = {
        "model": str(args.model),
        "model_name": predictor.name,
        "model_version": predictor.version,
        "served_detector": served,
        "served_check": served_check,
        "best_measured": best,
        "targets": {"test_kept": 0.95, "fpr_synthetic_max": 0.20, "fpr_shuffled_max": 0.50},
        "held_out": held_out_description,
        "temperature": "in the graph" if predictor.has_ood else temperature,
        "test_images": int(test_count),
        "test_accuracy": accuracy,
        "ood_images_per_set": {name: len(images) for name, (_, images) in sets.items()},
        "photo_sources": photo_sources,
        "candidates": candidates,
        "ood_output_cost": cost,
    }
    lines = [
        f"Model `{args.model}` ({predictor.name} {predictor.version}); served detector: "
        f"{served or 'none (no ood_score output)'}; best measured here: **{best}**. Thresholds keep 95% of "
        f"{held_out_description}; test accuracy "
        f"{accuracy:.2%} on {test_count} test images (the flag does not change any class).",
        "",
        "| detector | test kept | acc. on kept | " + " | ".join(f"{name} FPR / AUROC" for name in sets) + " |",
        "|---|---|---|" + "---|" * len(sets),
    ]
    for name, entry in candidates.items():
        cells = " | ".join(f"{s['fpr']:.1%} / {s['auroc']:.3f}" for s in entry["sets"].values())
        lines.append(f"| {name} | {entry['test_kept']:.1%} | {entry['accuracy_on_kept']:.2%} | {cells} |")
    lines += [
        "",
        "FPR: share of the off-distribution set called in-distribution at the threshold (targets: <= 20% synthetic, "
        "<= 50% shuffled). AUROC: test split against the set. Photos: crops of "
        + ", ".join(Path(p).name for p in photo_sources)
        + " from matplotlib's sample data.",
    ]
    if cost:
        lines.append(
            "ood_score cost: "
            + ", ".join(
                f"{k.replace('_', ' ')} {v['ms_with']:.2f} ms vs {v['ms_without']:.2f} ms ({v['overhead']:+.1%})"
                for k, v in cost.items()
            )
        )
    write_results(args.name, payload, lines, bench_machine(peak=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
