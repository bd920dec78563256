"""One entry point, one subcommand per job: `cifar10 data|train|evaluate|export|predict|serve`.

Jobs that need torch import it lazily, so `cifar10 predict` and `cifar10 serve` run on the small serving
install. Every expected failure (bad data, bad checkpoint, bad image) prints one line and exits non-zero.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cifar10_classifier import CLASSES
from cifar10_classifier.errors import UserError


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None, help="decoded-dataset cache (default $CIFAR10_CACHE)")
    parser.add_argument("--download", action="store_true", help="fetch the official archive (MD5-checked)")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip and count corrupt images")


def cmd_data_info(args: argparse.Namespace) -> int:
    from cifar10_classifier.data import load_dataset

    dataset = load_dataset(
        args.source, cache_dir=args.cache_dir, download=args.download, skip_bad_images=args.skip_bad_images
    )
    print(f"source   {dataset.source}")
    print(f"sha256   {dataset.checksum}")
    header = f"{'class':<12}{'train':>8}{'test':>8}"
    print(header)
    print("-" * len(header))
    train_counts, test_counts = dataset.train.counts_per_class(), dataset.test.counts_per_class()
    for name in CLASSES:
        print(f"{name:<12}{train_counts[name]:>8}{test_counts[name]:>8}")
    print("-" * len(header))
    print(f"{'total':<12}{len(dataset.train):>8}{len(dataset.test):>8}")
    if dataset.skipped_images:
        print(f"skipped {len(dataset.skipped_images)} bad images (--skip-bad-images)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cifar10", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="inspect data sources")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    info = data_commands.add_parser("info", help="count images per class and split")
    info.add_argument("source", nargs="?", help="archive, batches folder or image folder")
    _add_data_arguments(info)
    info.set_defaults(handler=cmd_data_info)

    from cifar10_classifier.cli.jobs import register_jobs

    register_jobs(commands, _add_data_arguments)
    return parser


def main(argv: list[str] | None = None) -> int:
    from cifar10_classifier.data.errors import DataError
    from cifar10_classifier.preprocess import ImageDecodeError

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = argv  # `train --nproc N` hands it on to torchrun unchanged
    try:
        return int(args.handler(args) or 0)
    except (DataError, UserError, ImageDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
