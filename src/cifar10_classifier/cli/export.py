"""`cifar10 export RUN`: model-fp32.onnx and model-int8.onnx, each with its card."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands) -> None:
    export = commands.add_parser("export", help="export a run to fp32 and int8 ONNX")
    export.add_argument("run", type=Path, help="run folder")
    export.add_argument("--out", type=Path, help="output folder (default: RUN/export)")
    export.add_argument("--data", help="data source for calibration and evaluation (default: the run's)")
    export.add_argument("--tta-level", type=int, default=None, help="TTA folded into the graph (default: recipe's)")
    export.add_argument("--calibration", default="minmax", choices=["minmax", "entropy", "percentile"])
    export.add_argument("--calibration-images", type=int, default=2000)
    export.add_argument("--max-accuracy-drop", type=float, default=0.5, help="points an int8 model may lose")
    export.add_argument("--allow-accuracy-drop", action="store_true", help="write the int8 model even past the limit")
    export.add_argument("--cache-dir", type=Path, default=None)
    export.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cifar10_classifier.export.graph import ExportConfig
    from cifar10_classifier.jobs import export_run
    from cifar10_classifier.runs import RunFolder

    config = ExportConfig(
        out_dir=args.out or RunFolder(args.run).export_dir,
        tta_level=args.tta_level,
        calibration_images=args.calibration_images,
        calibration_method=args.calibration,
        max_accuracy_drop=args.max_accuracy_drop / 100,
        allow_accuracy_drop=args.allow_accuracy_drop,
    )
    summary = export_run(args.run, args.data, config, cache_dir=args.cache_dir)
    print(f"wrote {summary['fp32']} and {summary['int8']}")
    return 0
