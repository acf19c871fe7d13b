import asyncio

import pytest

from ai.batcher import BatcherClosed, BatcherFull, MicroBatcher


class Recorder:
    """A batch function that doubles numbers, records each call, and can be held shut."""

    def __init__(self, bad: frozenset[int] = frozenset()) -> None:
        self.calls: list[list[int]] = []
        self.bad = bad
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        self.entered.set()
        await self.gate.wait()
        if self.bad & set(items):
            raise ValueError(f"cannot take {sorted(self.bad & set(items))}")
        return [2 * item for item in items]


def other_tasks() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}


async def test_items_within_the_window_share_one_call_in_order() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, window=0.02)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    assert results == [0, 2, 4, 6, 8]
    assert fn.calls == [[0, 1, 2, 3, 4]]


async def test_a_full_batch_goes_at_once_and_the_rest_follows() -> None:
    fn = Recorder()
    batcher = MicroBatcher(fn, window=3600, max_batch=3)
    results = await asyncio.wait_for(asyncio.gather(*(batcher.submit(i) for i in range(3))), 60)
    assert results == [0, 2, 4]
    assert fn.calls == [[0, 1, 2]]


async def test_items_arriving_during_a_batch_form_the_next_one() -> None:
    fn = Recorder()
    fn.gate.clear()
    batcher = MicroBatcher(fn, window=0)
    first = asyncio.create_task(batcher.submit(1))
    await fn.entered.wait()
    later = [asyncio.create_task(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    assert batcher.pending == 3
    fn.gate.set()
    assert await first == 2
    assert [await task for task in later] == [4, 6, 8]
    assert fn.calls == [[1], [2, 3, 4]]


async def test_one_failing_item_fails_alone() -> None:
    fn = Recorder(bad=frozenset({7}))
    batcher = MicroBatcher(fn, window=0.02)
    results = await asyncio.gather(*(batcher.submit(i) for i in (1, 7, 3)), return_exceptions=True)
    assert results[0] == 2 and results[2] == 6
    assert isinstance(results[1], ValueError) and "7" in str(results[1])
    assert fn.calls == [[1, 7, 3], [1], [7], [3]]


async def test_a_wrong_number_of_results_is_an_error_not_a_mismatch() -> None:
    async def loses_one(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = MicroBatcher(loses_one, window=0)
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        await batcher.submit(5)


async def test_a_cancelled_caller_leaves_no_item_and_no_task() -> None:
    before = other_tasks()
    fn = Recorder()
    fn.gate.clear()
    batcher = MicroBatcher(fn, window=0)
    in_flight = asyncio.create_task(batcher.submit(1))
    await fn.entered.wait()
    waiting = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0)
    assert batcher.pending == 1

    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert batcher.pending == 0

    in_flight.cancel()  # already dispatched: the batch finishes, its result is discarded
    with pytest.raises(asyncio.CancelledError):
        await in_flight
    fn.gate.set()
    assert await batcher.submit(3) == 6
    await asyncio.sleep(0)
    assert fn.calls == [[1], [3]]
    assert other_tasks() == before


async def test_overflow_rejects_the_new_item_and_keeps_the_others() -> None:
    fn = Recorder()
    fn.gate.clear()
    batcher = MicroBatcher(fn, window=0, max_pending=2)
    in_flight = asyncio.create_task(batcher.submit(1))
    await fn.entered.wait()
    queued = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0)
    with pytest.raises(BatcherFull):
        await batcher.submit(4)
    fn.gate.set()
    assert await in_flight == 2
    assert [await task for task in queued] == [4, 6]
    assert 4 not in {item for call in fn.calls for item in call}


async def test_close_fails_waiting_callers_and_stops_the_dispatcher() -> None:
    before = other_tasks()
    fn = Recorder()
    fn.gate.clear()
    batcher = MicroBatcher(fn, window=0)
    callers = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await fn.entered.wait()
    await batcher.close()
    for caller in callers:
        with pytest.raises(BatcherClosed):
            await caller
    with pytest.raises(BatcherClosed):
        await batcher.submit(3)
    assert other_tasks() == before
