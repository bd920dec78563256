"""The FastAPI app, built by a factory so tests (and each uvicorn worker) build their own from a Settings object.

Importing this module never imports torch: the serving install has none.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cifar10_classifier import __version__
from cifar10_classifier.serve.context import ServerContext
from cifar10_classifier.serve.errors import JSONBytesResponse, install_error_handlers
from cifar10_classifier.serve.guard import RequestGuard
from cifar10_classifier.serve.linger import LingeringClose
from cifar10_classifier.serve.model import PredictorLike
from cifar10_classifier.serve.routes import explain, ops, page, predict, v2
from cifar10_classifier.serve.settings import Settings

DESCRIPTION = """Classify images into the ten CIFAR-10 classes with an int8 ONNX model.

Every error has one shape: `{"error": {"code": "...", "message": "..."}}`.
The page to try the model is at `/`.
"""


def create_app(settings: Settings | None = None, *, predictor: PredictorLike | None = None) -> FastAPI:
    """An app serving `settings.model` (or the bundled model); `predictor` replaces the model file in tests."""
    settings = settings or Settings()
    context = ServerContext(settings, predictor)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await context.start()
        try:
            yield
        finally:
            await context.stop()

    app = FastAPI(
        title="CIFAR-10 classifier",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=JSONBytesResponse,
        # FastAPI's OpenTelemetry hooks probe the environment on every request; /metrics is our telemetry.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,  # served below from our own static files: FastAPI's default loads Swagger UI from a CDN
    )
    app.state.context = context
    install_error_handlers(app)
    app.include_router(predict.router)
    app.include_router(explain.router)
    app.include_router(v2.router)
    app.include_router(ops.router)
    app.include_router(page.router)
    app.mount("/static", page.static_files(), name="static")
    page.add_offline_docs(app)
    app.add_middleware(RequestGuard, settings=settings, metrics=context.metrics)
    # Outside the guard (added last), so its 429 lingers too and no drain holds an admission slot.
    app.add_middleware(LingeringClose, settings=settings)
    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory for `cifar10 serve`: every worker reads the same CIFAR10_* environment."""
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(settings)
