"""Rebuild the bundled model: train the bundled recipe (fast-large) on the shared archive, export, quantize, and
copy the int8 ONNX file and its card into the package (src/cifar10_classifier/bundled/).

    python scripts/build_bundled_model.py --data ../shared/datasets/cifar10-jpeg.tar.gz [--from-run RUN]

Training is seeded and deterministic on the same machine, so this rebuilds the same model; --from-run reuses a
finished run of the same recipe and seed (e.g. one bench/train_speed.py made) instead of training again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from cifar10_classifier.atomic import atomic_path, atomic_write_text
from cifar10_classifier.export.graph import ExportConfig
from cifar10_classifier.jobs import export_run
from cifar10_classifier.runs import INT8_NAME, RunFolder

BUNDLED = Path(__file__).resolve().parents[1] / "src" / "cifar10_classifier" / "bundled"
HOLD_OUT_FRACTION = 0.04  # 2,000 of the 50,000 training images


def cpu_kind(machine: dict) -> str:
    """The model name alone does not tell an AVX2-only EPYC from an AVX-512 one: name the flags that matter."""
    simd = set(machine.get("simd", []))
    wanted = [flag for flag in ("amx_bf16", "avx512_bf16", "avx512_vnni", "avx512f", "avx2") if flag in simd]
    return ", ".join(wanted) or "no AVX2"


def model_card_markdown(card: dict) -> str:
    """What was measured, on what, with how many runs: the human-readable side of the JSON card."""
    accuracy, machine, quantization = card.get("accuracy", {}), card.get("machine", {}), card.get("quantization", {})
    return "\n".join(
        [
            f"# Bundled model: {card['name']} ({card['version']})",
            "",
            f"- Recipe `{card['recipe']}` (model `{card['model']}`, config `{json.dumps(card['model_config'])}`), "
            f"seed {card.get('seed', 0)}, {card['epochs_trained']} epochs, one training run.",
            f"- Trained on `{card['data']['source']}` (sha256 `{card['data']['sha256'][:16]}...`) in "
            f"{card['train_seconds']:.0f} s of training ({card.get('train_and_eval_seconds', 0):.0f} s with the "
            f"test evaluation) on {machine.get('cpu', '?')} ({cpu_kind(machine)}), {machine.get('cores', '?')} "
            "cores, in "
            f"{card.get('precision', {}).get('reason', 'fp32')}, torch "
            f"{machine.get('torch', '?')}.",
            f"- Test accuracy (10,000 test images): PyTorch {accuracy.get('test', 0):.2%} without TTA, "
            f"{accuracy.get('test_tta', 0):.2%} with the recipe's TTA (level {accuracy.get('tta_level', 0)}); "
            f"this file, int8 ONNX with TTA level {card['tta_level']} in its graph: {accuracy.get('onnx_int8', 0):.2%} "
            f"(fp32 ONNX {accuracy.get('onnx_fp32', 0):.2%}).",
            f"- Quantization: {quantization.get('format')} static, weights {quantization.get('weights')}, activations "
            f"{quantization.get('activations')}, {quantization.get('calibration')} calibration on "
            f"{quantization.get('calibration_images')} training images (never test images).",
            f"- Input: RGB resized to {card['input']['size']}x{card['input']['size']} "
            f"({card['input']['resize_filter']} filter), normalized with mean {card['input']['mean']} "
            f"and std {card['input']['std']} (0-255 units).",
            *_calibration_and_ood_lines(card),
            "",
            "Rebuild with `make bundled-model` (scripts/build_bundled_model.py).",
            "",
        ]
    )


def _calibration_and_ood_lines(card: dict) -> list[str]:
    lines = []
    calibration, ood = card.get("calibration"), card.get("ood")
    if calibration:
        lines.append(
            f"- Calibration: probabilities are softmax(logits / T) with T = {calibration['temperature']:.3f} baked "
            f"into the graph, fitted by minimising the NLL on {calibration['fit_on']} (never test images). Expected "
            f"calibration error on the test split ({calibration['bins']} equal-width bins): "
            f"{calibration['ece_before']:.2%} before, {calibration['ece_after']:.2%} after."
        )
    if ood:
        lines.append(
            f"- Off-distribution flag: output `{ood['output']}`, the {ood['score']}. A prediction is "
            f"`in_distribution` when it is <= {ood['threshold']:.6g}, the threshold that keeps "
            f"{ood['keep_rate_target']:.0%} of {ood['threshold_fit_on']}. It keeps {ood['test_kept']:.1%} of the "
            "test images; the detector comparison and false-positive rates on off-distribution sets are in "
            "bench/results/ood.md."
        )
    return lines


def write_model_card() -> None:
    card = json.loads((BUNDLED / INT8_NAME).with_suffix(".json").read_text())
    atomic_write_text(BUNDLED / "MODEL_CARD.md", model_card_markdown(card))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data")
    # The bundled model is trained once and served many times, so it gets the most accurate recipe: fast-large.
    parser.add_argument("--recipe", default="fast-large")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-run", type=Path, help="a finished run of the same recipe and seed")
    parser.add_argument("--work", type=Path, default=Path("runs/bundled"))
    # The served graph runs one view per image: the recipe's 6-view TTA would cost 6x the latency and cut the
    # server's throughput by as much, for under a point of accuracy. The card records this graph's own accuracy.
    parser.add_argument("--tta-level", type=int, default=0, help="TTA folded into the bundled graph (default 0)")
    parser.add_argument("--card-only", action="store_true", help="only rewrite MODEL_CARD.md from the bundled card")
    # The temperature and the off-distribution threshold should be fitted on images the model never trained on:
    # 4% of the 50,000 (2,000, 200 per class) held out. Off: train on all 50,000 and fit on a draw of them.
    parser.add_argument(
        "--hold-out",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="hold out 4%% of the training images (val_fraction=0.04) for calibration (default on)",
    )
    args = parser.parse_args()
    if args.card_only:
        write_model_card()
        return 0

    if not args.data:
        parser.error("--data is required to build the model")
    run = args.from_run
    if run is None:
        run = args.work / "train"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cifar10_classifier",
                "train",
                "--recipe",
                args.recipe,
                "--data",
                args.data,
                "--seed",
                str(args.seed),
                "--out",
                str(run),
                "--force",
                *(["--set", f"val_fraction={HOLD_OUT_FRACTION}"] if args.hold_out else []),
            ],
            check=True,
        )
    card = RunFolder(run).read_card()
    if card["recipe"] != args.recipe:
        raise SystemExit(f"error: {run} was trained with recipe {card['recipe']!r}, not {args.recipe!r}")
    summary = export_run(run, args.data, ExportConfig(out_dir=args.work / "export", tta_level=args.tta_level))
    BUNDLED.mkdir(parents=True, exist_ok=True)
    source = Path(summary["int8"])
    with atomic_path(BUNDLED / INT8_NAME) as temp_path:
        shutil.copyfile(source, temp_path)
    atomic_write_text(BUNDLED / source.with_suffix(".json").name, source.with_suffix(".json").read_text())
    write_model_card()
    print(
        f"bundled {BUNDLED / INT8_NAME}: fp32 ONNX {summary['fp32_accuracy']:.4f}, "
        f"int8 {summary['int8_accuracy']:.4f} test accuracy"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
