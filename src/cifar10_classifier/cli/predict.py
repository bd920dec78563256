"""`cifar10 predict IMAGE...`: a table (or JSON lines) per image; a bad file gets one line and the rest go on.
With a local model (the bundled one unless --model) or a running server (--url), the same output either way.
Torch-free: it runs on the serving install."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cifar10_classifier.atomic import atomic_write_bytes
from cifar10_classifier.client import Client, ClientError, FailedPrediction
from cifar10_classifier.explain import occlusion_map, render_overlay
from cifar10_classifier.inference import ModelLoadError, Predictor
from cifar10_classifier.preprocess import ImageDecodeError

# Said beside a prediction the model itself flags as unlike its training images (`in_distribution: false`).
OFF_DISTRIBUTION_MARK = "  [none of the 10 classes?]"

# One image's outcome: its row (the prediction's dict) or why it failed.
Outcome = tuple[Path, dict[str, Any] | str]


def register(commands) -> None:
    predict = commands.add_parser("predict", help="classify image files with an ONNX model or a running server")
    predict.add_argument("images", nargs="+", type=Path)
    source = predict.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, help="ONNX model (default: the bundled int8 model)")
    source.add_argument("--url", help="ask a running server (cifar10 serve) instead, e.g. http://host:8000")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (local model only)")
    predict.add_argument(
        "--explain",
        type=Path,
        metavar="OUT.png",
        help="write the image with its occlusion heat map on top; with several images OUT-1.png, OUT-2.png, ... "
        "(local model only)",
    )
    predict.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return predict_files(
        args.images,
        model=args.model,
        url=args.url,
        top_k=args.top_k,
        as_json=args.json,
        threads=args.threads,
        explain=args.explain,
    )


def explanation_paths(target: Path, count: int) -> list[Path]:
    """One overlay path per image: `target` itself for one, numbered in argument order for several."""
    if count == 1:
        return [target]
    return [target.with_name(f"{target.stem}-{number}{target.suffix or '.png'}") for number in range(1, count + 1)]


def predict_files(
    paths: list[Path],
    *,
    model: Path | None = None,
    url: str | None = None,
    top_k: int = 3,
    as_json: bool = False,
    threads: int | None = None,
    explain: Path | None = None,
    out=None,
    err=None,
) -> int:
    """-> exit code: 0 all predicted, 1 some files failed, 2 the model could not be loaded or the server asked."""
    out, err = out or sys.stdout, err or sys.stderr
    if url is not None and explain is not None:
        print("error: --explain needs a local model; a server draws the heat map at POST /explain", file=err)
        return 2
    if url is not None:
        outcomes = remote_outcomes(url, paths, top_k)
    else:
        outcomes = local_outcomes(paths, model=model, top_k=top_k, threads=threads, explain=explain)
    failures = 0
    try:
        for path, outcome in outcomes:
            if isinstance(outcome, str):
                failures += 1
                if as_json:
                    print(json.dumps({"file": str(path), "error": outcome}), file=out)
                print(f"error: {path}: {outcome}", file=err)
            else:
                print(json.dumps({"file": str(path), **outcome}) if as_json else table_line(path, outcome), file=out)
    except (ModelLoadError, ClientError) as error:
        print(f"error: {error}", file=err)
        return 2
    if failures:
        print(f"{failures} of {len(paths)} images failed", file=err)
    return 1 if failures else 0


def table_line(path: Path, row: dict[str, Any]) -> str:
    ranked = "  ".join(f"{entry['class']} {entry['probability']:6.1%}" for entry in row["top_k"])
    # Absent (a model without an off-distribution score) says nothing; only an explicit false is marked.
    mark = OFF_DISTRIBUTION_MARK if row.get("in_distribution") is False else ""
    wrote = f"   heat map: {row['explanation']}" if "explanation" in row else ""
    return f"{path}: {row['class']} ({row['probability']:.1%})   top-{len(row['top_k'])}: {ranked}{mark}{wrote}"


def local_outcomes(
    paths: list[Path], *, model: Path | None, top_k: int, threads: int | None, explain: Path | None
) -> Iterator[Outcome]:
    """Each image through a local Predictor, one at a time; ModelLoadError before the first."""
    predictor = Predictor(model, threads=threads)
    overlays = explanation_paths(Path(explain), len(paths)) if explain else [None] * len(paths)
    for path, overlay in zip(paths, overlays, strict=True):
        try:
            data = Path(path).read_bytes()
            row = predictor.predict_bytes(data, top_k=top_k).to_dict()
            if overlay is not None:
                # The row stays predict_bytes' own (whatever it reports, in_distribution included); the second
                # decode costs ~1 ms beside the 65-image batch.
                image = predictor.decode(data)
                atomic_write_bytes(overlay, render_overlay(image, occlusion_map(predictor, image, top_k=top_k).heatmap))
                row["explanation"] = str(overlay)
        except (OSError, ImageDecodeError) as error:
            yield path, error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            continue
        yield path, row


def remote_outcomes(url: str, paths: list[Path], top_k: int) -> Iterator[Outcome]:
    """The images to a server's /predict/batch, a request's worth at a time so the lines come as answers do;
    ClientError when a whole request fails (the server is down, say)."""
    with Client(url) as client:
        step = client.files_per_request
        for start in range(0, len(paths), step):
            chunk = paths[start : start + step]
            for path, result in zip(chunk, client.predict_many(chunk, top_k=top_k), strict=True):
                yield path, result.message if isinstance(result, FailedPrediction) else result.to_dict()
