"""Subcommands other than `data`. Each job registers its own parser; torch-free jobs never import torch."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path


def _parse_set(values: list[str]) -> dict:
    overrides = {}
    for item in values:
        if "=" not in item:
            raise SystemExit(f"error: --set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value.strip()
    return overrides


def cmd_train(args: argparse.Namespace) -> int:
    from cifar10_classifier.errors import UserError
    from cifar10_classifier.training.recipes import load_config_file, resolve_recipe

    overrides: dict = {}
    if args.config:
        overrides.update(load_config_file(args.config))
    overrides.update(_parse_set(args.set))
    for name in ("epochs", "batch_size", "lr", "seed"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    try:
        recipe = resolve_recipe(args.recipe, overrides)
    except KeyError as error:
        raise UserError(str(error.args[0])) from error
    if args.nproc and args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        # The recipe is checked before any process starts; every rank trains on batch_size / nproc images a step.
        if recipe.batch_size % args.nproc:
            raise UserError(f"batch size {recipe.batch_size} does not split over {args.nproc} processes")
        return _launch_torchrun(args.nproc, args.command_line)

    from cifar10_classifier.training.checkpoints import RunFolderError
    from cifar10_classifier.training.distributed import (
        DistributedContext,
        DistributedFailure,
        collective_failures_explained,
        distributed_context,
        shutdown_distributed,
    )
    from cifar10_classifier.training.loop import TrainJob, run_training_job

    out_dir = args.out or Path("runs") / recipe.name
    job = TrainJob(
        recipe=recipe,
        data=args.data,
        out_dir=out_dir,
        resume=args.resume,
        force=args.force,
        download=args.download,
        cache_dir=args.cache_dir,
        skip_bad_images=args.skip_bad_images,
        show_progress=not args.quiet,
    )
    dist = DistributedContext()  # until this process has joined the others
    try:
        dist = distributed_context()
        with collective_failures_explained(dist):
            run_training_job(job, dist)
    except RunFolderError as error:
        if not dist.is_main:
            return 2  # rank 0's verdict, raised on every rank; rank 0 says it
        raise UserError(str(error)) from error
    except DistributedFailure as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if dist.is_main:
            print(
                f"interrupted: the last completed epoch is saved in {out_dir}/checkpoint.pt; continue with --resume",
                file=sys.stderr,
            )
        return 130
    finally:
        shutdown_distributed()
    return 0


def _without_nproc(command_line: list[str]) -> list[str]:
    """The command line minus `--nproc N`: torchrun's own parser would read it as an ambiguous `--nproc-per-node`."""
    kept, skip_value = [], False
    for item in command_line:
        if skip_value:
            skip_value = False
        elif item == "--nproc":
            skip_value = True
        elif not item.startswith("--nproc="):
            kept.append(item)
    return kept


def _launch_torchrun(nproc: int, command_line: list[str]) -> int:
    """`cifar10 train --nproc N ...` = `torchrun --standalone --nproc-per-node=N -m cifar10_classifier train ...`,
    run in this process (torchrun's own code) so the exit code of the first rank that failed comes back as ours.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    torchrun_args = ["--standalone", f"--nproc-per-node={nproc}", "-m", "cifar10_classifier"]
    try:
        run(parse_args([*torchrun_args, *_without_nproc(command_line)]))
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        # A negative exit code is a signal: report it the way a shell does (128 + signal number).
        code = failure.exitcode if failure.exitcode > 0 else 128 - failure.exitcode
        print(
            f"error: {len(error.failures)} of {nproc} ranks failed; the first, rank {rank}, exited with code {code}",
            file=sys.stderr,
        )
        return code
    except SignalException as error:
        return 128 + int(error.sigval)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cifar10_classifier.data import load_dataset
    from cifar10_classifier.errors import UserError
    from cifar10_classifier.evaluation.metrics import evaluate_model
    from cifar10_classifier.models.weights import WeightsError, load_weights, resolve_weights_folder
    from cifar10_classifier.training.loop import CONFIG_NAME
    from cifar10_classifier.training.recipes import DEFAULT_EVAL_BATCH_SIZE

    try:
        model, card = load_weights(args.run)
        folder = resolve_weights_folder(args.run)
    except WeightsError as error:
        raise UserError(str(error)) from error
    dataset = load_dataset(
        args.data, cache_dir=args.cache_dir, download=args.download, skip_bad_images=args.skip_bad_images
    )
    history = []
    history_path = folder / "history.json"
    if history_path.is_file():
        history = json.loads(history_path.read_text())
    # The run's own evaluation batch (the fast recipes use a CPU-friendly 100), read from the config beside it;
    # without one (or from an older, hand-made one) the default gives the same results at another speed.
    batch_size = DEFAULT_EVAL_BATCH_SIZE
    config_path = folder / CONFIG_NAME
    if config_path.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            batch_size = int(json.loads(config_path.read_text())["recipe"]["eval_batch_size"])
    tta_level = card.get("tta_level", 0) if args.tta_level is None else args.tta_level
    out_dir = args.out or folder
    metrics = evaluate_model(
        model,
        dataset.test.images_uint8,
        dataset.test.labels,
        tta_level,
        out_dir,
        history,
        card,
        batch_size=batch_size,
    )
    print(
        f"test accuracy {metrics['test_accuracy']:.4f}, with TTA {metrics['test_accuracy_tta']:.4f}; "
        f"report: {out_dir / 'report.md'}"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from cifar10_classifier.errors import UserError
    from cifar10_classifier.export.graph import ExportConfig, ExportError, export_run
    from cifar10_classifier.models.weights import WeightsError

    config = ExportConfig(
        out_dir=args.out or args.run / "export",
        tta_level=args.tta_level,
        calibration_images=args.calibration_images,
        calibration_method=args.calibration,
        max_accuracy_drop=args.max_accuracy_drop / 100,
        allow_accuracy_drop=args.allow_accuracy_drop,
    )
    try:
        summary = export_run(args.run, args.data, config, cache_dir=args.cache_dir)
    except (ExportError, WeightsError) as error:
        raise UserError(str(error)) from error
    print(f"wrote {summary['fp32']} and {summary['int8']}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cifar10_classifier.cli.predict import predict_files

    return predict_files(args.images, model=args.model, top_k=args.top_k, as_json=args.json, threads=args.threads)


def register_jobs(commands, add_data_arguments) -> None:
    from cifar10_classifier.cli.serve import register as register_serve
    from cifar10_classifier.training.recipes import recipe_names  # stdlib only: the parser stays torch-free

    train = commands.add_parser("train", help=f"train a recipe ({', '.join(recipe_names())})")
    train.add_argument("--recipe", default="fast", help="recipe name (default: fast)")
    train.add_argument("--data", help="data source (archive, batches folder, image folder)")
    train.add_argument("--out", type=Path, help="run folder (default runs/RECIPE)")
    train.add_argument("--config", type=Path, help="JSON or TOML file of recipe overrides")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--seed", type=int)
    train.add_argument("--resume", action="store_true", help="continue an interrupted run")
    train.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.add_argument("--nproc", type=int, default=0, help="launch N processes with torchrun (DDP)")
    add_data_arguments(train)
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a run or weights on the test split")
    evaluate.add_argument("run", type=Path, help="run folder or model.safetensors")
    evaluate.add_argument("--data", help="data source")
    evaluate.add_argument("--out", type=Path, help="where to write metrics and plots (default: the run folder)")
    evaluate.add_argument("--tta-level", type=int, default=None, help="override the recipe's TTA level")
    add_data_arguments(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

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
    export.set_defaults(handler=cmd_export)

    predict = commands.add_parser("predict", help="classify image files with an ONNX model")
    predict.add_argument("images", nargs="+", type=Path)
    predict.add_argument("--model", type=Path, help="ONNX model (default: the bundled int8 model)")
    predict.add_argument("--top-k", type=int, default=3)
    predict.add_argument("--json", action="store_true", help="one JSON object per line")
    predict.add_argument("--threads", type=int, default=None)
    predict.set_defaults(handler=cmd_predict)

    register_serve(commands)
