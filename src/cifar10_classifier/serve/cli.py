"""`cifar10 serve`: placeholder until the serving issue lands."""

from __future__ import annotations


def register(commands) -> None:
    parser = commands.add_parser("serve", help="serve a model over HTTP (not implemented yet)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.set_defaults(handler=lambda args: print("cifar10 serve: not implemented yet") or 1)
