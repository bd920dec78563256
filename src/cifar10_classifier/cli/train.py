"""`cifar10 train`: a recipe, resolved from its name, --config and --set, trained into a run folder; with
--nproc N, the same under torchrun."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cifar10_classifier.cli.arguments import add_data_arguments
from cifar10_classifier.errors import UserError
from cifar10_classifier.resume import TrainingPlan, plan_new_run, plan_resume
from cifar10_classifier.runs import RunFolder
from cifar10_classifier.training.recipes import load_config_file, recipe_names


def register(commands) -> None:
    train = commands.add_parser("train", help=f"train a recipe ({', '.join(recipe_names())})")
    train.add_argument("--recipe", help="recipe name (default: fast; with --resume, the run's own)")
    train.add_argument("--data", help="data source (archive, batches folder, image folder)")
    train.add_argument("--out", type=Path, help="run folder (default runs/RECIPE)")
    train.add_argument("--config", type=Path, help="JSON or TOML file of recipe overrides")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--seed", type=int)
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out with its own recipe, seed and data (only epochs and threads may change)",
    )
    train.add_argument("--force", action="store_true", help="overwrite an existing run folder")
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.add_argument(
        "--no-tensorboard",
        dest="tensorboard",
        action="store_false",
        help="write no TensorBoard event files (default: RUN/tensorboard/, for `tensorboard --logdir runs`)",
    )
    train.add_argument("--nproc", type=int, default=0, help="launch N processes with torchrun (DDP)")
    add_data_arguments(train)
    train.set_defaults(handler=run)


def parse_set(values: list[str]) -> dict:
    overrides = {}
    for item in values:
        if "=" not in item:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value.strip()
    return overrides


def run(args: argparse.Namespace) -> int:
    overrides: dict = {}
    if args.config:
        try:
            overrides.update(load_config_file(args.config))
        except (OSError, ValueError) as error:
            raise UserError(f"{args.config}: cannot read the config file ({error})") from error
    overrides.update(parse_set(args.set))
    for name in ("epochs", "batch_size", "lr", "seed"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.resume and args.force:
        raise UserError("--resume and --force contradict each other: --resume continues the run, --force starts over")
    out_dir = args.out or Path("runs") / (args.recipe or "fast")

    def plan() -> TrainingPlan:
        """What this command trains; with --resume, the run folder's own recipe, seed and data."""
        if args.resume:
            return plan_resume(
                RunFolder(out_dir),
                recipe_name=args.recipe,
                overrides=overrides,
                data=args.data,
                skip_bad_images=args.skip_bad_images,
            )
        return plan_new_run(args.recipe, overrides, args.data, args.skip_bad_images)

    # A RecipeError or ResumeError (both UserErrors) names what is wrong before any process starts. One of
    # torchrun's ranks resuming asks rank 0 instead (below): only rank 0's machine needs the run folder.
    launcher = "LOCAL_RANK" not in os.environ
    planned = plan() if launcher or not args.resume else None
    if planned and args.resume and not args.quiet:
        recipe = planned.recipe
        changes = "".join(f"; {key} {old} -> {new}" for key, (old, new) in planned.changed.items())
        print(f"resuming {out_dir}: recipe {recipe.name}, seed {recipe.seed}, data {planned.data}{changes}")
    if planned and args.nproc and args.nproc > 1 and launcher:
        # Every rank trains on batch_size / nproc images a step.
        if planned.recipe.batch_size % args.nproc:
            raise UserError(f"batch size {planned.recipe.batch_size} does not split over {args.nproc} processes")
        return _launch_torchrun(args.nproc, args.command_line)

    from cifar10_classifier import jobs
    from cifar10_classifier.training.distributed import (
        DistributedContext,
        DistributedFailure,
        collective_failures_explained,
        distributed_context,
        main_decides,
        shutdown_distributed,
    )

    def train_job(dist: DistributedContext) -> jobs.TrainJob:
        resolved = planned or main_decides(dist, plan)
        return jobs.TrainJob(
            recipe=resolved.recipe,
            data=resolved.data,
            out_dir=out_dir,
            resume=args.resume,
            force=args.force,
            download=args.download,
            cache_dir=args.cache_dir,
            skip_bad_images=resolved.skip_bad_images,
            show_progress=not args.quiet,
            tensorboard=args.tensorboard,
            trained_data=resolved.trained_data,
        )

    dist = DistributedContext()  # until this process has joined the others
    try:
        dist = distributed_context()
        with collective_failures_explained(dist):
            jobs.run_training_job(train_job(dist), dist)
    except UserError:
        if not dist.is_main:
            return 2  # rank 0's verdict, raised on every rank; rank 0 says it
        raise
    except DistributedFailure as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if dist.is_main:
            print(
                f"interrupted: the last completed epoch is saved in {out_dir}; continue with --resume",
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
