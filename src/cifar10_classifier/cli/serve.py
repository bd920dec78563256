"""`cifar10 serve`: the HTTP API and its page on uvicorn (httptools + uvloop), one process per worker.

Command-line flags override `CIFAR10_*` environment variables, which override the defaults in `Settings`. The
resolved settings are handed to every worker through the environment, so all workers serve the same thing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tempfile
from pathlib import Path

from cifar10_classifier.serve.settings import Settings

# flag -> Settings field; a flag left out keeps the environment's value or the default.
_FLAGS = {
    "host": "host",
    "port": "port",
    "workers": "workers",
    "model": "model",
    "threads": "threads",
    "max_batch_size": "max_batch_size",
    "max_wait_ms": "max_wait_ms",
    "max_in_flight": "max_in_flight",
    "timeout": "request_timeout_s",
    "max_upload_bytes": "max_upload_bytes",
    "linger_max_bytes": "linger_max_bytes",
    "linger_timeout": "linger_timeout_s",
    "linger_max_connections": "linger_max_connections",
    "log_level": "log_level",
}


def register(commands) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve a model over HTTP: the API, its docs and a page to try it",
        description="Serve the bundled int8 model (or --model) with its page at / and the API docs at /docs. "
        "Every flag also reads from an environment variable CIFAR10_<NAME>.",
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--workers", type=int, help="server processes (default one per core, at most 4)")
    parser.add_argument("--model", type=Path, help="ONNX model file (default: the bundled int8 model)")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads per worker (default cores // workers)")
    parser.add_argument("--max-batch-size", type=int, help="most requests coalesced into one inference call")
    parser.add_argument("--max-wait-ms", type=float, help="longest a request waits for a batch to fill")
    parser.add_argument("--max-in-flight", type=int, help="requests in flight per worker before answering 429")
    parser.add_argument("--timeout", type=float, help="seconds before a request is answered 504")
    parser.add_argument("--max-upload-bytes", type=int, help="largest request body accepted (413 past it)")
    parser.add_argument(
        "--linger-max-bytes", type=int, help="after an early answer (a 413), body bytes read and dropped before closing"
    )
    parser.add_argument("--linger-timeout", type=float, help="seconds the rest of such a body is read for (default 5)")
    parser.add_argument("--linger-max-connections", type=int, help="connections lingering at once (default 32)")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--access-log", action="store_true", help="log every request (costs throughput)")
    parser.set_defaults(handler=run)


def resolve_settings(args: argparse.Namespace) -> Settings:
    from pydantic import ValidationError

    from cifar10_classifier.errors import UserError
    from cifar10_classifier.inference import default_threads

    overrides = {field: getattr(args, flag) for flag, field in _FLAGS.items() if getattr(args, flag, None) is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as error:  # from a flag or a CIFAR10_* variable: name it, in one line
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']} (got {problem.get('input')!r})"
            for problem in error.errors()
        )
        raise UserError(f"invalid server setting: {problems} (flags, or CIFAR10_<NAME> variables)") from error
    workers = settings.resolved_workers()
    # cores // workers: N processes each running all-core inference would fight over the same cores.
    threads = settings.threads or default_threads(workers)
    return settings.model_copy(update={"workers": workers, "threads": threads})


def settings_environment(settings: Settings) -> dict[str, str]:
    """The settings as CIFAR10_* variables, for the worker processes uvicorn starts."""
    return {f"CIFAR10_{name.upper()}": str(value) for name, value in settings.model_dump().items() if value is not None}


class _Stopped(Exception):
    """SIGTERM or SIGINT arrived and uvicorn has finished its graceful shutdown."""


def _stopped(signum, frame) -> None:
    raise _Stopped


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from cifar10_classifier.errors import UserError
    from cifar10_classifier.serve.metrics import MULTIPROC_ENV

    settings = resolve_settings(args)
    if settings.model is not None and not settings.model.is_file():
        raise UserError(f"{settings.model}: model file not found")
    os.environ.update(settings_environment(settings))
    metrics_dir = None
    if (settings.workers or 1) > 1 and not os.environ.get(MULTIPROC_ENV):
        # Workers write their metrics to files here; /metrics on any worker sums them all.
        metrics_dir = tempfile.mkdtemp(prefix="cifar10-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    # uvicorn re-raises the signal once it has drained; our handler turns that into a normal return, so the
    # cleanup below runs and a clean shutdown exits 0.
    previous = {number: signal.signal(number, _stopped) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.run(
            "cifar10_classifier.serve.app:app_from_env",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            http="httptools",
            loop="uvloop",
            log_level=settings.log_level,
            access_log=args.access_log,
            # On SIGTERM uvicorn stops accepting, lets in-flight requests finish, then runs the lifespan's drain.
            timeout_graceful_shutdown=int(settings.shutdown_timeout_s),  # uvicorn takes whole seconds
        )
    except _Stopped:
        pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
