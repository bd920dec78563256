"""`cifar10 predict IMAGE...`: a table (or JSON lines) per image; a bad file gets one line and the rest go on.
Torch-free: it runs on the serving install."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cifar10_classifier.inference import ModelLoadError, Predictor
from cifar10_classifier.preprocess import ImageDecodeError


def register(commands) -> None:
    predict = commands.add_parser("predict", help="classify image files with an ONNX model")
    predict.add_argument("images", nargs="+", type=Path)
    predict.add_argument("--model", type=Path, help="ONNX model (default: the bundled int8 model)")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.add_argument("--threads", type=int, default=None)
    predict.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return predict_files(args.images, model=args.model, top_k=args.top_k, as_json=args.json, threads=args.threads)


def predict_files(
    paths: list[Path],
    *,
    model: Path | None = None,
    top_k: int = 3,
    as_json: bool = False,
    threads: int | None = None,
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
    for path in paths:
        try:
            prediction = predictor.predict_bytes(Path(path).read_bytes(), top_k=top_k)
        except (OSError, ImageDecodeError) as error:
            failures += 1
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            if as_json:
                print(json.dumps({"file": str(path), "error": reason}), file=out)
            print(f"error: {path}: {reason}", file=err)
            continue
        if as_json:
            print(json.dumps({"file": str(path), **prediction.to_dict()}), file=out)
        else:
            ranked = "  ".join(f"{name} {probability:6.1%}" for name, probability in prediction.top_k)
            print(
                f"{path}: {prediction.class_name} ({prediction.probability:.1%})   top-{len(prediction.top_k)}: "
                f"{ranked}",
                file=out,
            )
    if failures:
        print(f"{failures} of {len(paths)} images failed", file=err)
    return 1 if failures else 0
