"""Compare inference engines on the trained model: PyTorch eager fp32 and bf16, ONNX Runtime fp32 and int8.

    python bench/inference_speed.py --run runs/bundled/train --export runs/bundled/export

For each engine: test accuracy, throughput at batch 1, 32 and 256 (the median of interleaved rounds), p50/p99
single-image latency and file size.
Every engine runs the same graph (BN folded, the recipe's test-time augmentation inside). Then the photo check:
the test split upscaled to 256x256 and 320x240, saved as JPEG/PNG/WebP in turn, through the int8 predictor, must
stay within a point of the accuracy on the original tiles. Last, one explanation (/explain's occlusion map: decode
plus one batch of 65 images) against one prediction (`predict_bytes`) on the same 32x32 PNGs, int8, median of N.
Writes bench/results/inference_speed.json and .md.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
from common import DEFAULT_DATA, write_results
from PIL import Image

from cifar10_classifier.data import load_dataset
from cifar10_classifier.explain import DEFAULT_GRID, occlusion_map
from cifar10_classifier.export.graph import inference_graph
from cifar10_classifier.inference import Predictor
from cifar10_classifier.machine import usable_cores
from cifar10_classifier.models.weights import load_weights
from cifar10_classifier.preprocess import normalize
from cifar10_classifier.runs import FP32_NAME, INT8_NAME, RunFolder

BATCH_SIZES = (1, 32, 256)


def torch_engine(model, tta_level: int, bf16: bool):
    graph = inference_graph(model, tta_level).to(memory_format=torch.channels_last)

    def run(batch_float32: np.ndarray) -> np.ndarray:
        inputs = torch.from_numpy(batch_float32).contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return graph(inputs).float().numpy()

    return run


def onnx_engine(path: Path):
    predictor = Predictor(path, threads=usable_cores())
    return predictor.logits


def accuracy(run, images_float32: np.ndarray, labels: np.ndarray, batch: int = 250) -> float:
    correct = 0
    for start in range(0, len(labels), batch):
        correct += int((run(images_float32[start : start + batch]).argmax(1) == labels[start : start + batch]).sum())
    return correct / len(labels)


def throughput(run, images_float32: np.ndarray, batch: int, seconds: float) -> float:
    """Images per second of `run` on one batch, repeated for `seconds` after a warm-up call."""
    inputs = images_float32[:batch]
    run(inputs)  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run(inputs)
        done += batch
    return done / (time.perf_counter() - started)


def interleaved_throughput(runs: dict, images_float32: np.ndarray, batch: int, seconds: float, rounds: int) -> dict:
    """{engine: [images/s per round]}: every round measures each engine in turn, so a slow spell of the machine
    (this CPU's speed drifts by several percent from minute to minute) touches all engines alike, not one."""
    measured = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            measured[name].append(throughput(run, images_float32, batch, seconds))
    return measured


def latency_ms(run, images_float32: np.ndarray, count: int) -> tuple[float, float]:
    timings = []
    for index in range(count + 10):
        single = images_float32[index % len(images_float32)][None]
        started = time.perf_counter()
        run(single)
        if index >= 10:  # the first calls warm caches and allocators
            timings.append((time.perf_counter() - started) * 1000)
    return float(np.percentile(timings, 50)), float(np.percentile(timings, 99))


def photo_accuracy(predictor: Predictor, images_uint8: np.ndarray, labels: np.ndarray, size) -> float:
    """Upscale each tile to `size`, encode it as JPEG/PNG/WebP in turn, and classify the bytes."""
    formats = [("JPEG", {"quality": 90}), ("PNG", {}), ("WEBP", {"quality": 90})]
    correct = 0
    for index, (tile, label) in enumerate(zip(images_uint8, labels, strict=True)):
        buffer = io.BytesIO()
        fmt, options = formats[index % len(formats)]
        Image.fromarray(tile).resize(size, Image.Resampling.BICUBIC).save(buffer, format=fmt, **options)
        correct += predictor.predict_bytes(buffer.getvalue(), top_k=1).class_index == label
    return correct / len(labels)


def explanation_latency(predictor: Predictor, images_uint8: np.ndarray, count: int) -> dict:
    """Median ms of one explanation and of one prediction from the same 32x32 PNG bytes, measured in turn image by
    image so that a slow spell of the machine touches both alike; the ratio is what "Show why" costs."""
    encoded = []
    for tile in images_uint8[: max(1, min(count, len(images_uint8)))]:
        buffer = io.BytesIO()
        Image.fromarray(tile).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    explain_ms, predict_ms = [], []
    for index in range(count + 5):
        data = encoded[index % len(encoded)]
        started = time.perf_counter()
        occlusion_map(predictor, predictor.decode(data))
        explained = time.perf_counter()
        predictor.predict_bytes(data)
        predicted = time.perf_counter()
        if index >= 5:  # the first calls allocate the 65-image batch's buffers
            explain_ms.append((explained - started) * 1000)
            predict_ms.append((predicted - explained) * 1000)
    explain_p50, predict_p50 = float(np.median(explain_ms)), float(np.median(predict_ms))
    return {
        "grid": DEFAULT_GRID,
        "batch": 1 + DEFAULT_GRID * DEFAULT_GRID,
        "count": count,
        "explain_ms_p50": round(explain_p50, 3),
        "explain_ms_p99": round(float(np.percentile(explain_ms, 99)), 3),
        "predict_ms_p50": round(predict_p50, 3),
        "ratio_p50": round(explain_p50 / predict_p50, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/bundled/train"))
    parser.add_argument("--export", type=Path, default=Path("runs/bundled/export"))
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seconds", type=float, default=1.0, help="per throughput measurement (one round)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--latency-count", type=int, default=300)
    parser.add_argument("--photos", type=int, default=10000, help="test images for the photo check")
    args = parser.parse_args()

    torch.set_num_threads(usable_cores())
    dataset = load_dataset(args.data)
    test_uint8, labels = np.asarray(dataset.test.images_uint8), np.asarray(dataset.test.labels)
    test_float32 = normalize(test_uint8)
    model, card = load_weights(args.run)
    tta_level = int(Predictor(args.export / INT8_NAME).card.get("tta_level", card.get("tta_level", 0)))
    engines = {
        "torch-fp32": (torch_engine(model, tta_level, bf16=False), RunFolder(args.run).weights),
        "torch-bf16": (torch_engine(model, tta_level, bf16=True), RunFolder(args.run).weights),
        "onnx-fp32": (onnx_engine(args.export / FP32_NAME), args.export / FP32_NAME),
        "onnx-int8": (onnx_engine(args.export / INT8_NAME), args.export / INT8_NAME),
    }
    results = []
    for name, (run, path) in engines.items():
        print(f"measuring {name}...", flush=True)
        row = {"engine": name, "test_accuracy": accuracy(run, test_float32, labels)}
        p50, p99 = latency_ms(run, test_float32, args.latency_count)
        row.update(latency_ms_p50=round(p50, 3), latency_ms_p99=round(p99, 3), file_bytes=path.stat().st_size)
        results.append(row)
    runs = {name: run for name, (run, _) in engines.items()}
    for batch in BATCH_SIZES:
        print(f"throughput at batch {batch}: {args.rounds} interleaved rounds...", flush=True)
        rounds = interleaved_throughput(runs, test_float32, batch, args.seconds, args.rounds)
        for row in results:
            row.setdefault("images_per_second", {})[str(batch)] = round(float(np.median(rounds[row["engine"]])), 1)
            row.setdefault("images_per_second_rounds", {})[str(batch)] = [round(v, 1) for v in rounds[row["engine"]]]
    for row in results:
        print(row, flush=True)

    print("photo check...", flush=True)
    int8 = Predictor(args.export / INT8_NAME, threads=usable_cores())
    count = min(args.photos, len(labels))
    subset = np.random.default_rng(0).permutation(len(labels))[:count]
    photos = {
        "tiles": accuracy(int8.logits, test_float32[subset], labels[subset]),
        "256x256": photo_accuracy(int8, test_uint8[subset], labels[subset], (256, 256)),
        "320x240": photo_accuracy(int8, test_uint8[subset], labels[subset], (320, 240)),
    }
    print("explanation latency...", flush=True)
    explanation = explanation_latency(int8, test_uint8[subset], args.latency_count)
    by_name = {row["engine"]: row for row in results}
    lines = [
        f"Model: `{args.run}` (TTA level {tta_level} in every engine), {usable_cores()} threads. Throughput: the "
        f"median of {args.rounds} interleaved rounds of {args.seconds:g} s per engine and batch size.",
        "",
        "| engine | test acc | img/s b=1 | img/s b=32 | img/s b=256 | p50 ms | p99 ms | file |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        ips = row["images_per_second"]
        lines.append(
            f"| {row['engine']} | {row['test_accuracy']:.2%} | {ips['1']:,.0f} | {ips['32']:,.0f} | "
            f"{ips['256']:,.0f} | {row['latency_ms_p50']:.2f} | {row['latency_ms_p99']:.2f} | "
            f"{row['file_bytes'] / 1e6:.2f} MB |"
        )
    speedup_eager = by_name["onnx-int8"]["images_per_second"]["256"] / by_name["torch-fp32"]["images_per_second"]["256"]
    lines += [
        "",
        f"int8 vs PyTorch fp32 eager at batch 256: {speedup_eager:.2f}x; int8 - fp32 ONNX accuracy: "
        f"{(by_name['onnx-int8']['test_accuracy'] - by_name['onnx-fp32']['test_accuracy']) * 100:+.2f} points; "
        f"int8 file {by_name['onnx-int8']['file_bytes'] / by_name['onnx-fp32']['file_bytes']:.2f} of fp32.",
        "",
        f"Photos ({count} test images, int8): tiles {photos['tiles']:.2%}, 256x256 {photos['256x256']:.2%}, "
        f"320x240 {photos['320x240']:.2%} (JPEG/PNG/WebP in turn).",
        "",
        f"Explanation ({explanation['grid']}x{explanation['grid']} occlusion, one batch of {explanation['batch']}, "
        f"int8, median of {explanation['count']}): {explanation['explain_ms_p50']:.1f} ms (p99 "
        f"{explanation['explain_ms_p99']:.1f}) vs one prediction {explanation['predict_ms_p50']:.2f} ms: "
        f"{explanation['ratio_p50']:.0f}x; target <= 50 ms.",
    ]
    payload = {"model": str(args.run), "tta_level": tta_level, "engines": results, "photos": photos}
    write_results("inference_speed", {**payload, "explanation": explanation}, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
