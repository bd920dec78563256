"""What the routes share: settings, the model's state, the micro-batcher and the metrics. One per app."""

from __future__ import annotations

import asyncio
import contextlib

from cifar10_classifier.preprocess import ImageDecodeError
from cifar10_classifier.serve.batcher import BatcherClosed, MicroBatcher
from cifar10_classifier.serve.errors import ApiError, from_decode_error
from cifar10_classifier.serve.metrics import Metrics
from cifar10_classifier.serve.model import BatchItem, ItemResult, ModelState, PredictorLike
from cifar10_classifier.serve.settings import Settings


class ServerContext:
    def __init__(self, settings: Settings, predictor: PredictorLike | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.model = ModelState()
        self._given_predictor = predictor
        self.batcher: MicroBatcher[BatchItem, ItemResult] | None = None
        self._load_task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self.batcher = MicroBatcher(
            self._run_batch,
            max_batch_size=self.settings.max_batch_size,
            max_wait_s=self.settings.max_wait_ms / 1000.0,
            observer=self.metrics.observe_batch,
            # A v2 tensor of N images counts N: max_batch_size bounds the rows of one ONNX Runtime call.
            size_of=lambda item: 1 if isinstance(item, bytes) else len(item),
        )
        # In a thread either way: the event loop stays free. With preload the lifespan waits for it, so the
        # worker starts accepting only once warm; without, /healthz answers while the model loads.
        self._load_task = asyncio.ensure_future(
            asyncio.to_thread(self.model.load, self.settings, self._given_predictor)
        )
        if self.settings.preload:
            await self._load_task

    async def wait_loaded(self) -> None:
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.close()  # drains: queued and running batches finish and answer
        if self._load_task is not None and not self._load_task.done():
            with contextlib.suppress(Exception):
                await self._load_task
        self.metrics.close()

    def _run_batch(self, items: list[BatchItem]) -> list[ItemResult | Exception]:
        runner = self.model.runner
        if runner is None:  # cannot happen after require_ready(); kept as a clear failure if it ever does
            raise RuntimeError("the model is not loaded")
        return runner.run_batch(items)

    def require_ready(self) -> PredictorLike:
        """The predictor, or 503 saying why there is none (loading, or no model: how to get one)."""
        if self.model.ready and self.model.predictor is not None:
            return self.model.predictor
        if self.model.status == "loading":
            raise ApiError(503, "model_loading", self.model.message, headers={"Retry-After": "1"})
        raise ApiError(503, "model_unavailable", self.model.message)

    async def infer(self, item: BatchItem) -> ItemResult:
        """One image (bytes) or one tensor batch through the micro-batcher; errors become API errors."""
        assert self.batcher is not None
        try:
            return await self.batcher.submit(item)
        except ImageDecodeError as error:
            raise from_decode_error(error) from None
        except BatcherClosed:
            raise ApiError(503, "shutting_down", "the server is shutting down; retry", {"Retry-After": "1"}) from None
