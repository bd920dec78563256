"""Subcommands other than `data`. Each job registers its own parser; torch-free jobs never import torch."""

from __future__ import annotations


def register_jobs(commands, add_data_arguments) -> None:
    from cifar10_classifier.serve.cli import register as register_serve

    for name in ("train", "evaluate", "export", "predict"):
        parser = commands.add_parser(name, help=f"{name} (not implemented yet)")
        parser.set_defaults(handler=lambda args, name=name: _not_yet(name))
    register_serve(commands)


def _not_yet(name: str) -> int:
    print(f"cifar10 {name}: not implemented yet")
    return 1
