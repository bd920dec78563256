"""`cifar10 evaluate RUN`: metrics, figures and the report of a run (or its weights) on the test split."""

from __future__ import annotations

import argparse
from pathlib import Path

from cifar10_classifier.cli.arguments import add_data_arguments


def register(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="evaluate a run or weights on the test split")
    evaluate.add_argument("run", type=Path, help="run folder or model.safetensors")
    evaluate.add_argument("--data", help="data source")
    evaluate.add_argument("--out", type=Path, help="where to write metrics and plots (default: the run folder)")
    evaluate.add_argument("--tta-level", type=int, default=None, help="override the recipe's TTA level")
    add_data_arguments(evaluate)
    evaluate.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cifar10_classifier.jobs import EvaluateJob, run_evaluation_job

    job = EvaluateJob(
        run=args.run,
        data=args.data,
        out_dir=args.out,
        tta_level=args.tta_level,
        download=args.download,
        cache_dir=args.cache_dir,
        skip_bad_images=args.skip_bad_images,
    )
    metrics = run_evaluation_job(job)
    print(
        f"test accuracy {metrics['test_accuracy']:.4f}, with TTA {metrics['test_accuracy_tta']:.4f}; "
        f"report: {metrics['report']}"
    )
    return 0
