"""`cifar10 predict IMAGE...`: a table (or JSON lines) per image; a bad file gets one line and the rest go on.
Torch-free: it runs on the serving install."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cifar10_classifier.atomic import atomic_write_bytes
from cifar10_classifier.explain import occlusion_map, render_overlay
from cifar10_classifier.inference import ModelLoadError, Predictor
from cifar10_classifier.preprocess import ImageDecodeError

# Said beside a prediction the model itself flags as unlike its training images (`in_distribution: false`).
OFF_DISTRIBUTION_MARK = "  [none of the 10 classes?]"


def register(commands) -> None:
    predict = commands.add_parser("predict", help="classify image files with an ONNX model")
    predict.add_argument("images", nargs="+", type=Path)
    predict.add_argument("--model", type=Path, help="ONNX model (default: the bundled int8 model)")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.add_argument("--threads", type=int, default=None)
    predict.add_argument(
        "--explain",
        type=Path,
        metavar="OUT.png",
        help="write the image with its occlusion heat map on top; with several images OUT-1.png, OUT-2.png, ...",
    )
    predict.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return predict_files(
        args.images, model=args.model, top_k=args.top_k, as_json=args.json, threads=args.threads, explain=args.explain
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
    top_k: int = 3,
    as_json: bool = False,
    threads: int | None = None,
    explain: Path | None = None,
    out=None,
    err=None,
) -> int:
    """-> exit code: 0 all predicted, 1 some files failed, 2 the model could not be loaded."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        predictor = Predictor(model, threads=threads)
    except ModelLoadError as error:
        print(f"error: {error}", file=err)
        return 2
    failures = 0
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
            failures += 1
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            if as_json:
                print(json.dumps({"file": str(path), "error": reason}), file=out)
            print(f"error: {path}: {reason}", file=err)
            continue
        if as_json:
            print(json.dumps({"file": str(path), **row}), file=out)
        else:
            ranked = "  ".join(f"{entry['class']} {entry['probability']:6.1%}" for entry in row["top_k"])
            # Absent (a model without an off-distribution score) says nothing; only an explicit false is marked.
            mark = OFF_DISTRIBUTION_MARK if row.get("in_distribution") is False else ""
            wrote = f"   heat map: {overlay}" if overlay is not None else ""
            print(
                f"{path}: {row['class']} ({row['probability']:.1%})   top-{len(row['top_k'])}: {ranked}{mark}{wrote}",
                file=out,
            )
    if failures:
        print(f"{failures} of {len(paths)} images failed", file=err)
    return 1 if failures else 0
