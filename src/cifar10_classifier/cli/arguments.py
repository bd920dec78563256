"""Arguments more than one subcommand takes."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None, help="decoded-dataset cache (default $CIFAR10_CACHE)")
    parser.add_argument("--download", action="store_true", help="fetch the official archive (MD5-checked)")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip and count corrupt images")
