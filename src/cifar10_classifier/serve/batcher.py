"""An asyncio micro-batcher: concurrent requests are coalesced into one call of a batch function in a thread.

One ONNX Runtime call on 16 images costs far less than 16 calls on one, and running it in a worker thread keeps
the event loop free to accept and parse the next requests meanwhile. A batch leaves when it is full, when the
oldest item has waited `max_wait_s`, or - while a batch is already running - as soon as that batch finishes:
under load the queue fills while the model works, so batches grow with the load and no timer is needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

# Called on the event loop for every batch that leaves: (batch size, seconds each item waited in the queue).
BatchObserver = Callable[[int, list[float]], None]


class BatcherClosed(RuntimeError):
    """The server is shutting down and takes no new work."""


@dataclass(slots=True)
class _Pending:
    item: Any
    future: asyncio.Future[Any]
    queued_at: float
    size: int


class MicroBatcher(Generic[ItemT, ResultT]):
    """`await batcher.submit(item)` -> that item's result from `run_batch(items)`.

    `run_batch` runs in `executor` (one thread by default: one batch at a time per process, so the inference
    threads never compete with each other) and returns one result per item, in order. An item whose result is an
    exception fails only its own request; if `run_batch` itself raises, every item of that batch fails with it.
    `size_of(item)` counts what `max_batch_size` limits (images, when one request carries several); an item
    larger than the limit goes alone.
    """

    def __init__(
        self,
        run_batch: Callable[[list[ItemT]], Sequence[ResultT | BaseException]],
        *,
        max_batch_size: int = 32,
        max_wait_s: float = 0.001,
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
        size_of: Callable[[ItemT], int] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self._run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max(0.0, max_wait_s)
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="cifar10-batch")
        self._observer = observer
        self._size_of = size_of
        self._pending: list[_Pending] = []
        self._timer: asyncio.TimerHandle | None = None
        self._queued_size = 0
        self._running = False
        self._closed = False
        self._idle: asyncio.Event | None = None

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def submit(self, item: ItemT) -> ResultT:
        if self._closed:
            raise BatcherClosed("the server is shutting down")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        size = self._size_of(item) if self._size_of is not None else 1
        self._pending.append(_Pending(item, future, time.perf_counter(), size))
        self._queued_size += size
        if not self._running:
            if self._queued_size >= self.max_batch_size or self.max_wait_s == 0:
                self._dispatch()
            elif self._timer is None:
                self._timer = loop.call_later(self.max_wait_s, self._dispatch)
        # A running batch dispatches what is pending when it finishes (see _finish).
        result: ResultT = await future
        return result

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running:
            return
        # Items whose request was cancelled (timeout, client gone) are dropped before they cost inference.
        batch: list[_Pending] = []
        batch_size = taken = 0
        for pending in self._pending:
            if pending.future.done():
                taken += 1
                continue
            if batch and batch_size + pending.size > self.max_batch_size:
                break
            batch.append(pending)
            batch_size += pending.size
            taken += 1
        for pending in self._pending[:taken]:
            self._queued_size -= pending.size
        del self._pending[:taken]
        if not batch:
            self._signal_idle()
            return
        self._running = True
        now = time.perf_counter()
        if self._observer is not None:
            self._observer(batch_size, [now - p.queued_at for p in batch])
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self._run_batch, [p.item for p in batch])
        done.add_done_callback(lambda finished: self._finish(batch, finished))

    def _finish(self, batch: list[_Pending], finished: asyncio.Future[Any]) -> None:
        self._running = False
        if finished.cancelled():
            failure: BaseException | None = BatcherClosed("the batch was cancelled")
        else:
            failure = finished.exception()
        results: Sequence[Any] = () if failure is not None else finished.result()
        if failure is None and len(results) != len(batch):
            failure = RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} items")
        for index, pending in enumerate(batch):
            if pending.future.done():  # its request was cancelled meanwhile
                continue
            outcome = failure if failure is not None else results[index]
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
        if self._pending:
            # These waited at least one batch already: send them now rather than start another timer.
            self._dispatch()
        else:
            self._signal_idle()

    def _signal_idle(self) -> None:
        if self._idle is not None and not self._running and not self._pending:
            self._idle.set()

    async def close(self) -> None:
        """Stop taking work, finish everything queued or running (graceful shutdown drains), free the thread."""
        self._closed = True
        if self._running or self._pending:
            self._idle = asyncio.Event()
            if not self._running:
                self._dispatch()
            await self._idle.wait()
        if self._owns_executor:
            self._executor.shutdown(wait=True)
