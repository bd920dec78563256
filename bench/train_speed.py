"""Train each recipe on the shared archive and record time, throughput and test accuracy.

    python bench/train_speed.py --data ../shared/datasets/cifar10-jpeg.tar.gz [--recipes fast,fast-small,classic]
        [--seeds 2] [--nproc 1]

Each run is a real `cifar10 train` process; its time is training plus the final test-time-augmented evaluation
(the dataset is decoded into the cache first, outside the timing). Writes bench/results/train_speed.json and
train_speed.md. Also reports training throughput as a fraction of this machine's measured peak matmul
throughput in the same dtype, so the distance to the hardware limit is on record.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import DEFAULT_DATA, write_results

from cifar10_classifier.data import load_dataset
from cifar10_classifier.models import create_model
from cifar10_classifier.recipes import Recipe
from cifar10_classifier.train import CONFIG_NAME


def peak_matmul_gflops(dtype: torch.dtype, size: int = 2048, repeats: int = 10, rounds: int = 5) -> float:
    """The best of a few rounds: this is a peak, and on a shared machine one round can land on a busy second
    (a single round once read 87 GFLOP/s on a CPU that reaches ~175)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9)
    return best


def training_flops_per_image(recipe: Recipe, size: int = 32) -> float:
    """Forward FLOPs x 3 (forward + two backward matmuls) for one size x size image, by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(recipe.model, **recipe.model_config)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.randn(1, 3, size, size))  # eval: batch norm on one image is undefined in training mode
    return 3.0 * counter.get_total_flops()


def training_gflops(out: Path, history: list[dict]) -> float:
    """The FLOPs a run's training did: each epoch's images at that epoch's training window (crop epochs cost
    less than full-size ones), with the recipe the run wrote beside its results."""
    config = json.loads((out / CONFIG_NAME).read_text())
    recipe = Recipe(**config["recipe"])
    per_size: dict[int, float] = {}
    total = 0.0
    for epoch, row in enumerate(history, start=1):
        size = recipe.crop_size_for_epoch(epoch)
        if size not in per_size:
            per_size[size] = training_flops_per_image(recipe, size)
        total += per_size[size] * row["images_per_second"] * row["epoch_seconds"]
    return total / 1e9


def run_recipe(recipe: str, seed: int, data: str, runs_dir: Path, nproc: int, overrides: list[str]) -> dict:
    out = runs_dir / (f"{recipe}-seed{seed}" + ("" if nproc == 1 else f"-np{nproc}"))
    command = [
        sys.executable,
        "-m",
        "cifar10_classifier",
        "train",
        "--recipe",
        recipe,
        "--data",
        data,
        "--out",
        str(out),
        "--seed",
        str(seed),
        "--force",
    ]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    for item in overrides:
        command += ["--set", item]
    print(f"$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    # N processes share the machine's cores: each gets cores / N threads, not torchrun's default of one.
    threads = max(1, (os.cpu_count() or 1) // nproc)
    subprocess.run(command, check=True, env={**os.environ, "CI": "1", "OMP_NUM_THREADS": str(threads)})
    return collect_run(out, recipe, seed, nproc, round(time.perf_counter() - started, 1))


def collect_run(out: Path, recipe: str, seed: int, nproc: int, process_seconds: float | None) -> dict:
    """A finished run folder -> its benchmark row (times from its card and history, accuracy from metrics)."""
    card = json.loads((out / "model.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    images = sum(row["images_per_second"] * row["epoch_seconds"] for row in history)
    train_only = sum(row["epoch_seconds"] for row in history)
    return {
        "recipe": recipe,
        "seed": seed,
        "nproc": nproc,
        "epochs": len(history),
        "train_seconds": card["train_and_eval_seconds"],
        "train_only_seconds": round(train_only, 1),
        "process_seconds": process_seconds,
        "images_per_second": round(images / train_only, 1),
        "training_gflops_per_image": round(training_gflops(out, history) / images, 3),
        "test_accuracy": metrics["test_accuracy"],
        "test_accuracy_tta": metrics["test_accuracy_tta"],
        "tta_level": metrics["tta_level"],
        "run": str(out),
        "run_finished": card["version"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--recipes", default="fast,fast-small,classic")
    parser.add_argument("--seeds", type=int, default=2, help="seeds for fast and fast-small (classic runs one)")
    parser.add_argument("--nproc", default="1", help="comma-separated process counts, e.g. 1,2")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench"))
    parser.add_argument("--name", default="train_speed", help="results file name (e.g. train_scaling)")
    parser.add_argument(
        "--collect",
        action="store_true",
        help="summarise the finished run folders in --runs-dir instead of training (process_seconds "
        "is then unknown); for when a summary step failed after the runs completed",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override for all runs")
    parser.add_argument(
        "--reuse",
        default="",
        help="comma-separated recipes whose finished run folders in --runs-dir are summarised, not retrained: "
        "only for a recipe whose code path is unchanged since that run; its rows say reused and when it ran",
    )
    args = parser.parse_args()

    load_dataset(args.data)  # decode into the cache once, outside every timing
    torch.set_num_threads(os.cpu_count() or 1)
    peak = {"fp32": round(peak_matmul_gflops(torch.float32), 1)}
    runs = []
    reuse = set(filter(None, args.reuse.split(",")))
    for recipe in args.recipes.split(","):
        seeds = 1 if recipe == "classic" else args.seeds
        for nproc in (int(n) for n in args.nproc.split(",")):
            for seed in range(seeds):
                if args.collect or recipe in reuse:
                    name = f"{recipe}-seed{seed}" + ("" if nproc == 1 else f"-np{nproc}")
                    result = collect_run(args.runs_dir / name, recipe, seed, nproc, None)
                    result["reused_run"] = recipe in reuse
                else:
                    result = run_recipe(recipe, seed, args.data, args.runs_dir, nproc, args.set)
                result["overrides"] = args.set
                gflops_per_second = result["images_per_second"] * result["training_gflops_per_image"]
                result["fraction_of_peak_fp32"] = round(gflops_per_second / peak["fp32"], 3)
                runs.append(result)
                print(json.dumps(result), flush=True)

    summary = {}
    for run in runs:
        key = (run["recipe"], run["nproc"])
        summary.setdefault(key, []).append(run)
    lines = [
        f"Peak fp32 matmul: {peak['fp32']} GFLOP/s.",
        "",
        "| recipe | procs | seeds | epochs | wall-clock s (train + TTA eval) | images/s | % of peak | "
        "test acc | test acc TTA |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (recipe, nproc), group in summary.items():

        def mean(field, group=group):
            return sum(r[field] for r in group) / len(group)

        lines.append(
            f"| {recipe} | {nproc} | {len(group)} | {group[0]['epochs']} | {mean('train_seconds'):.0f} | "
            f"{mean('images_per_second'):.0f} | {mean('fraction_of_peak_fp32'):.0%} | "
            f"{mean('test_accuracy'):.2%} | {mean('test_accuracy_tta'):.2%} |"
        )
    lines += ["", f"Each row is the mean over its seeds; every run is listed in {args.name}.json."]
    for run in runs:
        if run.get("reused_run"):
            finished = run["run_finished"]
            lines.append(f"{run['recipe']} (seed {run['seed']}): reused the run finished {finished} (--reuse).")
    if args.collect:
        lines.append("Summarised from finished run folders (--collect): the peak was measured then, after training.")
    if args.set:
        lines.insert(0, f"Recipe overrides: {', '.join(args.set)}.")
    write_results(args.name, {"peak_matmul_gflops": peak, "runs": runs}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
