"""Train each recipe on the shared archive beside the peer, on the same cores in the same run, and record
time, throughput and test accuracy as ratios to the peer.

    python bench/train_speed.py [--data ARCHIVE] [--recipes fast,fast-small,classic] [--seeds 2] [--nproc 1]
        [--no-peer | --peer-result FILE] [--peer-epochs 8] [--frontier]

Each run is a real `cifar10 train` process; its time is training plus the final test-time-augmented evaluation
(the dataset is decoded into the cache first, outside the timing), the same span the peer's own timer covers.
The peer is airbench94_muon on the CPU (bench/peer.py); every row gets `time_ratio_vs_peer` (our seconds / the
peer's at --peer-epochs) and `accuracy_delta_vs_peer` (points). With --frontier the peer runs at 2, 4 and 8
epochs and bench/results/frontier.json and frontier.png hold every point, with each recipe's margin over the
peer's frontier (linear between its points) at its own time. Absolute seconds are context: the machine block
names the CPU, its SIMD flags, the precision and the measured matmul peak. Throughput is also reported as a
fraction of that peak in the training precision.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import DEFAULT_DATA, RESULTS, bench_machine, write_results
from peer import PEER_NAME, load_peer_result, run_peers

from cifar10_classifier.atomic import atomic_write_text
from cifar10_classifier.data import load_dataset
from cifar10_classifier.machine import usable_cores
from cifar10_classifier.models import create_model
from cifar10_classifier.runs import RunFolder
from cifar10_classifier.training.recipes import RECIPES, Recipe


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
    config = RunFolder(out).read_config()
    recipe = Recipe.from_dict(config["recipe"])
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
    threads = max(1, usable_cores() // nproc)
    subprocess.run(command, check=True, env={**os.environ, "CI": "1", "OMP_NUM_THREADS": str(threads)})
    return collect_run(out, recipe, seed, nproc, round(time.perf_counter() - started, 1))


def collect_run(out: Path, recipe: str, seed: int, nproc: int, process_seconds: float | None) -> dict:
    """A finished run folder -> its benchmark row (times from its card and history, accuracy from metrics)."""
    run = RunFolder(out)
    card, metrics, history = run.read_card(), run.read_metrics(), run.read_history()
    trained = Recipe.from_dict((run.read_config() or {})["recipe"]).to_dict()
    named = RECIPES[recipe].to_dict()
    # What the run changed from the named recipe, read from its own config (the seed aside): so a row can
    # never claim the plain recipe for a run that was not.
    overrides = [f"{key}={trained[key]}" for key in named if key != "seed" and trained[key] != named[key]]
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
        "precision": card.get("precision", {}).get("reason"),
        "overrides": overrides,
    }


def peer_point(peer: dict, epochs: int) -> dict:
    return next(point for point in peer["points"] if point["epochs"] == epochs)


def frontier_accuracy(peer: dict, seconds: float) -> float:
    """The peer's accuracy at `seconds`, linear between its points; below its cheapest point, that point's."""
    points = sorted((p["train_seconds"], p["test_accuracy_tta"]) for p in peer["points"])
    if seconds <= points[0][0]:
        return points[0][1]
    for (t0, a0), (t1, a1) in itertools.pairwise(points):
        if seconds <= t1:
            return a0 + (a1 - a0) * (seconds - t0) / (t1 - t0)
    return points[-1][1]  # past its most expensive point: no claim that the peer would go on improving


# The targets of the frontier issue, per recipe: (points above the peer's 8-epoch accuracy, at most this
# fraction of its time). Every recipe must also lie 0.5 point above the frontier.
TARGETS = {"fast-large": (0.3, 0.8), "fast": (-1.5, 0.4), "fast-small": (-4.0, 0.15)}
FRONTIER_MARGIN = 0.5


def compare_with_peer(runs: list[dict], peer: dict, peer_epochs: int) -> dict:
    """Add the ratios to each run, and summarise each recipe's mean against the peer and its frontier."""
    reference = peer_point(peer, peer_epochs)
    for run in runs:
        run["time_ratio_vs_peer"] = round(run["train_seconds"] / reference["train_seconds"], 3)
        run["accuracy_delta_vs_peer"] = round((run["test_accuracy_tta"] - reference["test_accuracy_tta"]) * 100, 2)
    recipes: dict[str, dict] = {}
    for recipe in dict.fromkeys(run["recipe"] for run in runs if run["nproc"] == 1):
        group = [run for run in runs if run["recipe"] == recipe and run["nproc"] == 1]
        seconds = sum(r["train_seconds"] for r in group) / len(group)
        accuracy = sum(r["test_accuracy_tta"] for r in group) / len(group)
        summary = {
            "overrides": sorted({item for run in group for item in run["overrides"]}),
            "seeds": len(group),
            "train_seconds": round(seconds, 1),
            "test_accuracy_tta": round(accuracy, 4),
            "time_ratio_vs_peer": round(seconds / reference["train_seconds"], 3),
            "accuracy_delta_vs_peer": round((accuracy - reference["test_accuracy_tta"]) * 100, 2),
        }
        if len(peer["points"]) > 1:
            summary["margin_over_frontier"] = round((accuracy - frontier_accuracy(peer, seconds)) * 100, 2)
            summary["above_frontier_target_met"] = summary["margin_over_frontier"] >= FRONTIER_MARGIN
        if recipe in TARGETS:
            points, ratio = TARGETS[recipe]
            summary["target"] = f">= peer {points:+.1f} pt in <= {ratio}x its time"
            summary["target_met"] = (
                summary["accuracy_delta_vs_peer"] >= points and summary["time_ratio_vs_peer"] <= ratio
            )
        recipes[recipe] = summary
    return {"reference_epochs": peer_epochs, "recipes": recipes}


def plot_title(machine: dict) -> str:
    """The machine in one short line: CPU, the flags that set its speed, the precision, the matmul peak."""
    flags = [f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in machine.get("simd", [])][:2]
    peak = machine.get("peak_matmul_gflops", {})
    peaks = " / ".join(f"{value:.0f} {name}" for name, value in peak.items())
    used = machine.get("precision", {}).get("used", "fp32")
    return f"{machine['cpu']}, {machine['cores']} cores ({', '.join(flags)}), {used}; matmul peak {peaks} GFLOP/s"


def plot_frontier(peer: dict, runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cifar10_classifier.atomic import atomic_path

    figure, axes = plt.subplots(figsize=(7, 4.5))
    points = sorted(peer["points"], key=lambda p: p["train_seconds"])
    axes.plot(
        [p["train_seconds"] for p in points],
        [p["test_accuracy_tta"] * 100 for p in points],
        "o-",
        color="tab:gray",
        label=f"peer: {PEER_NAME}",
    )
    for p in points:
        axes.annotate(
            f"{p['epochs']} ep",
            (p["train_seconds"], p["test_accuracy_tta"] * 100),
            textcoords="offset points",
            xytext=(4, -12),
            fontsize=8,
            color="tab:gray",
        )
    for recipe in dict.fromkeys(run["recipe"] for run in runs):
        group = [run for run in runs if run["recipe"] == recipe and run["nproc"] == 1]
        axes.scatter([r["train_seconds"] for r in group], [r["test_accuracy_tta"] * 100 for r in group], label=recipe)
    axes.set_xlabel("seconds: training + TTA evaluation (same machine, same run)")
    axes.set_ylabel("test accuracy with TTA (%)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png", dpi=120)
    plt.close(figure)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--recipes", default="fast,fast-small,classic")
    parser.add_argument("--seeds", type=int, default=2, help="seeds for the fast recipes (classic runs one)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--nproc", default="1", help="comma-separated process counts, e.g. 1,2")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench"))
    parser.add_argument("--name", default="train_speed", help="results file name (e.g. train_scaling)")
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True, help="run the peer too")
    parser.add_argument("--peer-epochs", type=int, default=8, help="the peer run the ratios compare with")
    parser.add_argument(
        "--peer-result", type=Path, help="reuse bench/peer.py's file from this machine today instead of running it"
    )
    parser.add_argument(
        "--frontier", action="store_true", help="peer at 2, 4 and 8 epochs; write frontier.json and frontier.png"
    )
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
    torch.set_num_threads(usable_cores())
    machine = bench_machine()
    precision = machine["precision"]["used"]
    peak = machine["peak_matmul_gflops"][precision]
    peer_epochs = sorted({2, 4, 8, args.peer_epochs}) if args.frontier else [args.peer_epochs]
    peer = None
    if args.peer_result:
        peer = load_peer_result(args.peer_result, peer_epochs)
    elif args.peer:
        peer = run_peers(peer_epochs, args.data)  # first, so the peer and ours see the same hour of this CPU
        # Kept at once: should a later run fail, --peer-result reuses it with --collect.
        atomic_write_text(RESULTS / "peer_airbench.json", json.dumps(peer, indent=2) + "\n")

    runs: list[dict] = []
    missing: list[str] = []
    reuse = set(filter(None, args.reuse.split(",")))
    for recipe in args.recipes.split(","):
        seeds = 1 if recipe == "classic" else args.seeds
        for nproc in (int(n) for n in args.nproc.split(",")):
            for seed in range(args.first_seed, args.first_seed + seeds):
                if args.collect or recipe in reuse:
                    name = f"{recipe}-seed{seed}" + ("" if nproc == 1 else f"-np{nproc}")
                    if not RunFolder(args.runs_dir / name).metrics.is_file():
                        print(f"no finished run {args.runs_dir / name}: left out", flush=True)
                        missing.append(name)
                        continue
                    result = collect_run(args.runs_dir / name, recipe, seed, nproc, None)
                    result["reused_run"] = recipe in reuse
                else:
                    result = run_recipe(recipe, seed, args.data, args.runs_dir, nproc, args.set)
                gflops_per_second = result["images_per_second"] * result["training_gflops_per_image"]
                result[f"fraction_of_peak_{precision}"] = round(gflops_per_second / peak, 3)
                runs.append(result)
                print(json.dumps(result), flush=True)

    comparison = compare_with_peer(runs, peer, args.peer_epochs) if peer else None
    lines = markdown_table(runs, precision, peer, comparison, args)
    if missing:
        lines.append(f"Runs that had not finished and are left out (--collect): {', '.join(missing)}.")
    payload = {"peak_matmul_gflops": machine["peak_matmul_gflops"], "peer": peer, "vs_peer": comparison, "runs": runs}
    write_results(args.name, payload, lines, machine)
    if args.frontier and peer:
        frontier = {"peer": peer, "vs_peer": comparison, "runs": runs}
        write_results("frontier", frontier, lines, machine)
        plot_frontier(peer, runs, RESULTS / "frontier.png", plot_title(machine))
    return 0


def markdown_table(runs: list[dict], precision: str, peer: dict | None, comparison: dict | None, args) -> list[str]:
    lines: list[str] = []
    if peer and comparison:
        reference = peer_point(peer, comparison["reference_epochs"])
        lines += [
            f"Peer: {PEER_NAME} at {reference['epochs']} epochs, {reference['test_accuracy_tta']:.2%} with TTA in "
            f"{reference['train_seconds']} s ({reference['dtype']}), measured "
            + ("in this run." if "reused_from" not in peer else f"on this machine today ({peer['reused_from']})."),
            "",
            "| recipe | seeds | time vs peer | accuracy vs peer | margin over the peer's frontier | target | met |",
            "|---|---|---|---|---|---|---|",
        ]
        for recipe, row in comparison["recipes"].items():
            margin = row.get("margin_over_frontier")
            lines.append(
                f"| {recipe} | {row['seeds']} | {row['time_ratio_vs_peer']:.2f}x | "
                f"{row['accuracy_delta_vs_peer']:+.2f} pt | {'-' if margin is None else f'{margin:+.2f} pt'} | "
                f"{row.get('target', '-')} | {row.get('target_met', '-')} |"
            )
        if len(peer["points"]) > 1:
            lines += ["", "| peer epochs | seconds | accuracy TTA |", "|---|---|---|"]
            lines += [
                f"| {p['epochs']} | {p['train_seconds']} | {p['test_accuracy_tta']:.2%} |" for p in peer["points"]
            ]
        lines.append("")
    summary: dict = {}
    for run in runs:
        summary.setdefault((run["recipe"], run["nproc"]), []).append(run)
    lines += [
        "| recipe | procs | seeds | epochs | seconds (train + TTA eval) | images/s | % of peak | test acc | "
        "test acc TTA |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (recipe, nproc), group in summary.items():
        changed = sorted({item for run in group for item in run["overrides"]})
        label = recipe + (f" ({', '.join(changed)})" if changed else "")

        def mean(field, group=group):
            return sum(r[field] for r in group) / len(group)

        lines.append(
            f"| {label} | {nproc} | {len(group)} | {group[0]['epochs']} | {mean('train_seconds'):.0f} | "
            f"{mean('images_per_second'):.0f} | {mean(f'fraction_of_peak_{precision}'):.0%} | "
            f"{mean('test_accuracy'):.2%} | {mean('test_accuracy_tta'):.2%} |"
        )
    lines += ["", f"Each row is the mean over its seeds; every run is listed in {args.name}.json."]
    for run in runs:
        if run.get("reused_run"):
            lines.append(f"{run['recipe']} (seed {run['seed']}): reused the run finished {run['run_finished']}.")
    if args.collect:
        lines.append("Summarised from finished run folders (--collect): the peak was measured then, after training.")
    if args.set:
        lines.insert(0, f"Recipe overrides: {', '.join(args.set)}.")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
