"""The micro-batcher: batches form under concurrency, results stay paired with their requests, failures stay local."""

from __future__ import annotations

import asyncio
import threading

import pytest

from cifar10_classifier.serve.batcher import BatcherClosed, MicroBatcher


class Recorder:
    """A batch function that records the batches it saw and doubles each number (or fails the ones asked)."""

    def __init__(self, fail_items=(), gate: threading.Event | None = None):
        self.batches: list[list] = []
        self.fail_items = set(fail_items)
        self.gate = gate

    def __call__(self, items):
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(list(items))
        return [ValueError(f"bad item {item}") if item in self.fail_items else item * 2 for item in items]


def test_concurrent_submissions_form_batches_and_keep_their_pairing():
    recorder = Recorder()

    async def main():
        batcher = MicroBatcher(recorder, max_batch_size=8, max_wait_s=0.05)
        results = await asyncio.gather(*(batcher.submit(item) for item in range(20)))
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert results == [item * 2 for item in range(20)]
    sizes = [len(batch) for batch in recorder.batches]
    assert sum(sizes) == 20 and max(sizes) <= 8 and len(sizes) <= 4
    assert [item for batch in recorder.batches for item in batch] == list(range(20))  # arrival order kept


def test_batches_grow_while_the_model_is_busy():
    gate = threading.Event()
    recorder = Recorder(gate=gate)

    async def main():
        batcher = MicroBatcher(recorder, max_batch_size=64, max_wait_s=0.0)
        first = asyncio.ensure_future(batcher.submit(0))  # leaves at once (no wait) and blocks on the gate
        await asyncio.sleep(0.01)
        rest = [asyncio.ensure_future(batcher.submit(item)) for item in range(1, 11)]
        await asyncio.sleep(0.01)
        gate.set()
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return results

    assert asyncio.run(main()) == [item * 2 for item in range(11)]
    assert [len(batch) for batch in recorder.batches] == [1, 10]


def test_a_failing_item_fails_only_its_own_request():
    recorder = Recorder(fail_items={3, 7})

    async def main():
        batcher = MicroBatcher(recorder, max_batch_size=16, max_wait_s=0.01)
        results = await asyncio.gather(*(batcher.submit(item) for item in range(10)), return_exceptions=True)
        await batcher.close()
        return results

    results = asyncio.run(main())
    for item, result in enumerate(results):
        if item in (3, 7):
            assert isinstance(result, ValueError) and str(result) == f"bad item {item}"
        else:
            assert result == item * 2
    assert len(recorder.batches) == 1  # they all shared one call


def test_a_batch_function_that_raises_fails_that_batch_and_the_next_batch_works():
    calls = []

    def flaky(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("the model crashed")
        return [item + 100 for item in items]

    async def main():
        batcher = MicroBatcher(flaky, max_batch_size=4, max_wait_s=0.01)
        first = await asyncio.gather(*(batcher.submit(item) for item in range(3)), return_exceptions=True)
        second = await asyncio.gather(*(batcher.submit(item) for item in range(3)))
        await batcher.close()
        return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(result, RuntimeError) for result in first)
    assert second == [100, 101, 102]


def test_a_wrong_number_of_results_fails_the_batch_clearly():
    async def main():
        batcher = MicroBatcher(lambda items: [1], max_batch_size=4, max_wait_s=0.01)
        results = await asyncio.gather(*(batcher.submit(item) for item in range(2)), return_exceptions=True)
        await batcher.close()
        return results

    assert all("2 items" in str(result) for result in asyncio.run(main()))


def test_a_cancelled_request_is_dropped_before_inference():
    recorder = Recorder()

    async def main():
        batcher = MicroBatcher(recorder, max_batch_size=8, max_wait_s=0.02)
        doomed = asyncio.ensure_future(batcher.submit(99))
        kept = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0)
        doomed.cancel()
        result = await kept
        await batcher.close()
        return result

    assert asyncio.run(main()) == 2
    assert recorder.batches == [[1]]


def test_close_drains_queued_and_running_work_then_refuses_new_work():
    gate = threading.Event()
    recorder = Recorder(gate=gate)

    async def main():
        batcher = MicroBatcher(recorder, max_batch_size=2, max_wait_s=0.0)
        pending = [asyncio.ensure_future(batcher.submit(item)) for item in range(5)]
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.01)
        assert not closing.done()  # still draining
        gate.set()
        await closing
        with pytest.raises(BatcherClosed):
            await batcher.submit(9)
        return await asyncio.gather(*pending)

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]


def test_the_observer_sees_each_batch_size_and_queue_waits():
    seen = []

    async def main():
        batcher = MicroBatcher(
            Recorder(), max_batch_size=4, max_wait_s=0.01, observer=lambda size, waits: seen.append((size, waits))
        )
        await asyncio.gather(*(batcher.submit(item) for item in range(6)))
        await batcher.close()

    asyncio.run(main())
    assert sum(size for size, _ in seen) == 6
    assert all(len(waits) == size and all(wait >= 0 for wait in waits) for size, waits in seen)


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch_size=0)


def test_size_of_bounds_the_rows_of_a_batch_and_an_oversized_item_goes_alone():
    recorder = Recorder()

    async def main():
        batcher = MicroBatcher(recorder, max_batch_size=4, max_wait_s=0.05, size_of=lambda item: item)
        results = await asyncio.gather(*(batcher.submit(item) for item in (3, 3, 1, 5)))
        await batcher.close()
        return results

    assert asyncio.run(main()) == [6, 6, 2, 10]
    assert recorder.batches == [[3], [3, 1], [5]]
