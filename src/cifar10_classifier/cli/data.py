"""`cifar10 data info SOURCE`: count images per class and split."""

from __future__ import annotations

import argparse

from cifar10_classifier import CLASSES
from cifar10_classifier.cli.arguments import add_data_arguments


def register(commands) -> None:
    data = commands.add_parser("data", help="inspect data sources")
    data_commands = data.add_subparsers(dest="data_command", required=True)
    info = data_commands.add_parser("info", help="count images per class and split")
    info.add_argument("source", nargs="?", help="archive, batches folder or image folder")
    add_data_arguments(info)
    info.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
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
