"""The jobs a user runs, over a run folder: train (then evaluate), evaluate, export. Each takes one typed config.

The CLI is thin argparse glue over these; the loop, metrics and export modules know nothing of each other.
Torch is imported inside each job, so importing this module costs nothing.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cifar10_classifier.runs import FP32_NAME, INT8_NAME, RunFolder
from cifar10_classifier.training.recipes import DEFAULT_EVAL_BATCH_SIZE, Recipe

if TYPE_CHECKING:
    from cifar10_classifier.export.graph import ExportConfig
    from cifar10_classifier.resume import TrainedData
    from cifar10_classifier.training.distributed import DistributedContext
    from cifar10_classifier.training.tensorboard_log import TensorBoardLog


# Training images the off-distribution detector's Gaussian is fitted on (320 dimensions for fast-large).
STATISTICS_FIT_IMAGES = 5000


@dataclass(frozen=True)
class TrainJob:
    """One `cifar10 train` invocation, resolved."""

    recipe: Recipe
    data: str | None
    out_dir: Path
    resume: bool = False
    force: bool = False
    download: bool = False
    cache_dir: Path | None = None
    skip_bad_images: bool = False
    show_progress: bool = True
    evaluate: bool = True
    trained_data: TrainedData | None = None  # on resume: the data the run started on, which must be loaded again
    tensorboard: bool = True  # event files in RUN/tensorboard/ (training.tensorboard_log)


def run_training_job(job: TrainJob, dist: DistributedContext | None = None) -> dict:
    """Train, save weights + card, and (rank 0) evaluate on the test split and write the report; rank 0 logs
    all of it to TensorBoard unless job.tensorboard is off."""
    from cifar10_classifier.training.distributed import DistributedContext
    from cifar10_classifier.training.tensorboard_log import TensorBoardLog

    dist = dist or DistributedContext()
    run = RunFolder(job.out_dir)
    # Closed on every way out, a crash and Ctrl-C included: the event files stay readable.
    with TensorBoardLog.for_run(run, enabled=job.tensorboard, dist=dist) as board:
        return _train_and_evaluate(job, dist, run, board)


def _train_and_evaluate(job: TrainJob, dist: DistributedContext, run: RunFolder, board: TensorBoardLog) -> dict:

    from cifar10_classifier.data import DataError, load_dataset
    from cifar10_classifier.evaluation.metrics import evaluate_model
    from cifar10_classifier.models.weights import save_weights
    from cifar10_classifier.training import loop

    try:
        dataset = load_dataset(
            job.data, cache_dir=job.cache_dir, download=job.download, skip_bad_images=job.skip_bad_images
        )
    except DataError as error:
        if job.trained_data is not None and job.data == job.trained_data.source:
            raise job.trained_data.unloadable(error) from error
        raise
    if job.trained_data is not None:
        job.trained_data.check(dataset.source, dataset.checksum)
    started = time.perf_counter()
    model, state, card = loop.train(
        job.recipe,
        dataset,
        run,
        resume=job.resume,
        force=job.force,
        dist=dist,
        show_progress=job.show_progress,
        board=board,
    )
    result = {"card": card, "history": state.history}
    if not dist.is_main:
        return result
    save_weights(model, run, card)
    if job.evaluate:
        metrics = evaluate_model(
            model,
            dataset.test.images_uint8,
            dataset.test.labels,
            job.recipe.tta_level,
            run.path,
            state.history,
            card,
            bf16=loop.precision_for(job.recipe, loop.choose_device()).bf16,
            batch_size=job.recipe.eval_batch_size,
            held_out=_held_out_images(dataset, job.recipe.val_fraction, job.recipe.seed),
        )
        card["accuracy"] = {
            "test": metrics["test_accuracy"],
            "test_tta": metrics["test_accuracy_tta"],
            "tta_level": job.recipe.tta_level,
        }
        # The PyTorch model's own temperature and test ECE; each exported file fits its own (export_run).
        card["calibration"] = {
            key: metrics["calibration"][key] for key in ("temperature", "fit_on", "ece_before", "ece_after", "bins")
        }
        card["train_and_eval_seconds"] = round(time.perf_counter() - started, 1)
        save_weights(model, run, card)
        result["metrics"] = metrics
        board.final(metrics, job.recipe, state.history)
        if job.show_progress:
            print(
                f"test accuracy {metrics['test_accuracy']:.4f}, with TTA {metrics['test_accuracy_tta']:.4f}; "
                f"report: {run.report}",
                flush=True,
            )
    return result


@dataclass(frozen=True)
class EvaluateJob:
    """One `cifar10 evaluate` invocation: a run (or its weights) evaluated on a data source's test split."""

    run: Path
    data: str | None = None
    out_dir: Path | None = None  # default: the run folder
    tta_level: int | None = None  # default: the recipe's
    download: bool = False
    cache_dir: Path | None = None
    skip_bad_images: bool = False


def run_evaluation_job(job: EvaluateJob) -> dict:

    from cifar10_classifier.data import load_dataset
    from cifar10_classifier.evaluation.metrics import evaluate_model
    from cifar10_classifier.models.weights import load_weights

    run = RunFolder.of_weights(job.run)
    model, card = load_weights(run)
    dataset = load_dataset(
        job.data, cache_dir=job.cache_dir, download=job.download, skip_bad_images=job.skip_bad_images
    )
    # The run's own evaluation batch (the fast recipes use a CPU-friendly 100); without a config beside the
    # weights the default gives the same results at another speed.
    batch_size = run.recipe_value("eval_batch_size", DEFAULT_EVAL_BATCH_SIZE)
    tta_level = card.get("tta_level", 0) if job.tta_level is None else job.tta_level
    out = RunFolder(job.out_dir) if job.out_dir else run
    metrics = evaluate_model(
        model,
        dataset.test.images_uint8,
        dataset.test.labels,
        tta_level,
        out.path,
        run.read_history(),
        card,
        batch_size=batch_size,
        held_out=_held_out_images(dataset, run.recipe_value("val_fraction", 0.0), run.recipe_value("seed", 0)),
    )
    metrics["report"] = str(out.report)
    return metrics


def export_run(
    run_path: Path, data_source: str | None, config: ExportConfig, *, cache_dir: Path | None = None, log=print
) -> dict:
    """Export a trained run to fp32 and int8 ONNX in config.out_dir -> a summary with both accuracies.

    model-fp32.onnx has a dynamic batch; model-int8.onnx is its static QDQ quantization, calibrated on training
    images only. Each carries the model card as ONNX metadata and as JSON beside it. Test-time augmentation is
    folded into the graph, so the served accuracy is the evaluated one. An int8 model that loses more than the
    allowed accuracy on the test split is refused unless the caller says otherwise.
    """
    import json

    import numpy as np

    from cifar10_classifier.atomic import atomic_write_text
    from cifar10_classifier.data import load_dataset, stratified_split
    from cifar10_classifier.export.graph import ExportError, embed_card, export_onnx, inference_graph
    from cifar10_classifier.export.quantize import QUANTIZED_OP_TYPES, onnx_accuracy, quantize_int8
    from cifar10_classifier.export.served_outputs import bake_outputs, fit_served_outputs
    from cifar10_classifier.models.weights import load_weights
    from cifar10_classifier.preprocess import normalize

    run = RunFolder.of_weights(run_path)
    model, card = load_weights(run)
    tta_level = card.get("tta_level", 0) if config.tta_level is None else config.tta_level
    dataset = load_dataset(data_source or card.get("data", {}).get("source"), cache_dir=cache_dir)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The stage graph has the penultimate features as a second output; each file's temperature and detector are
    # fitted on its own outputs and baked in (export.served_outputs): the int8 file's on the int8 candidate, whose
    # outputs are what gets served.
    graph = inference_graph(model, tta_level, with_features=True)
    export_card = {**card, "tta_level": tta_level, "source_run": str(run.path), "exported": time.strftime("%Y-%m-%d")}
    fit_images = _fit_images(run, dataset)

    fp32_path, int8_path = out_dir / FP32_NAME, out_dir / INT8_NAME
    export_onnx(graph, fp32_path, {**export_card, "format": "onnx-fp32"})
    test_images, test_labels = np.asarray(dataset.test.images_uint8), np.asarray(dataset.test.labels)

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
        fp32_fitted = fit_served_outputs(fp32_path, fit_images)
        bake_outputs(fp32_path, fp32_fitted)
        fp32_accuracy = onnx_accuracy(fp32_path, test_images, test_labels)
        log(f"fp32 ONNX test accuracy {fp32_accuracy:.4f}")
        int8_fitted = fit_served_outputs(candidate, fit_images)
        bake_outputs(candidate, int8_fitted)
        _log_fitted(log, "int8", int8_fitted)
        int8_card.update({key: int8_fitted[key] for key in ("calibration", "ood") if key in int8_fitted})
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
        **{key: fp32_fitted[key] for key in ("calibration", "ood") if key in fp32_fitted},
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
        "calibration": int8_card.get("calibration"),
        "ood": int8_card.get("ood"),
    }


def _held_out_images(dataset, val_fraction: float, seed: int):
    """-> (uint8 images, labels, what they are): the training images the temperature is fitted on."""
    import numpy as np

    from cifar10_classifier.calibration import held_out_for_calibration

    train_labels = np.asarray(dataset.train.labels)
    held_out, fit_on = held_out_for_calibration(train_labels, val_fraction, seed)
    return np.asarray(dataset.train.images_uint8)[held_out], train_labels[held_out], fit_on


def _fit_images(run: RunFolder, dataset):
    """Training images only, normalized: the held-out ones (the run's validation split, or a labelled draw when
    it held none out) for T and the threshold; and the test split, to report on."""
    import numpy as np

    from cifar10_classifier.calibration import draw_outside, held_out_for_calibration
    from cifar10_classifier.export.served_outputs import FitImages
    from cifar10_classifier.preprocess import normalize

    train_labels = np.asarray(dataset.train.labels)
    split = {"val_fraction": run.recipe_value("val_fraction", 0.0), "seed": run.recipe_value("seed", 0)}
    held_out, description = held_out_for_calibration(train_labels, split["val_fraction"], split["seed"])
    images = np.asarray(dataset.train.images_uint8)
    # The detector's Gaussian comes from other training images than the threshold's, so the threshold keeps 95% of
    # images the Gaussian has not seen (as the test split will).
    drawn = draw_outside(train_labels, held_out, STATISTICS_FIT_IMAGES, split["seed"])
    return FitImages(
        held_out=normalize(images[held_out]),
        held_out_labels=train_labels[held_out],
        held_out_description=description,
        held_out_split=split,
        test=normalize(np.asarray(dataset.test.images_uint8)),
        test_labels=np.asarray(dataset.test.labels),
        # Too few to fit a Gaussian on (tiny test data): the detector falls back to the feature norm.
        statistics_fit=normalize(images[drawn]) if len(drawn) >= 20 else None,
        statistics_fit_description=f"{len(drawn)} training images outside the held-out ones (seeded, class-balanced)",
    )


def _log_fitted(log, name: str, fitted: dict) -> None:
    calibration = fitted["calibration"]
    line = (
        f"{name}: temperature {calibration['temperature']:.3f}, test ECE {calibration['ece_before']:.2%} -> "
        f"{calibration['ece_after']:.2%}"
    )
    if "ood" in fitted:
        line += f"; ood threshold {fitted['ood']['threshold']:.4g} keeps {fitted['ood']['test_kept']:.1%} of test"
    log(line)
