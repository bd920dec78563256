"""Subcommands other than `data`: filled in as the jobs land."""

from __future__ import annotations


def register_jobs(commands, add_data_arguments) -> None:
    for name in ("train", "evaluate", "export", "predict", "serve"):
        parser = commands.add_parser(name, help=f"{name} (not implemented yet)")
        parser.set_defaults(handler=lambda args, name=name: _not_yet(name))


def _not_yet(name: str) -> int:
    print(f"cifar10 {name}: not implemented yet")
    return 1
