"""One entry point, one subcommand per job: `cifar10 data|train|evaluate|export|predict|serve`.

Every subcommand is a module here with the same two functions: `register(commands)` adds its parser, and
`run(args) -> exit code` does the job, importing torch lazily (so `predict` and `serve` run on the small serving
install). Every expected failure is a `UserError`: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from cifar10_classifier.cli import data, evaluate, export, predict, serve, train
from cifar10_classifier.errors import UserError

SUBCOMMANDS = (data, train, evaluate, export, predict, serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cifar10", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for subcommand in SUBCOMMANDS:
        subcommand.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = argv  # `train --nproc N` hands it on to torchrun unchanged
    try:
        return int(args.handler(args) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
