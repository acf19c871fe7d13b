"""Cross-room micro-batching: callers submit one item each, the model sees a batch.

A single model copy serves every room. Running its items one by one wastes
the batched matrix work it is built for; waiting long for a full batch adds
latency. `MicroBatcher` takes what arrives within a short window (from any
room), hands it to one call of the batch function, and routes each result back
to its own caller.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

log = logging.getLogger(__name__)


class BatcherFull(RuntimeError):
    """The pending queue is at its bound; the item was not accepted."""


class BatcherClosed(RuntimeError):
    """The batcher was closed before the item got a result."""


@dataclass(slots=True, eq=False)  # identity: items may be arrays, which do not compare
class _Pending(Generic[In, Out]):
    item: In
    result: asyncio.Future[Out]
    since: float


class MicroBatcher(Generic[In, Out]):
    """Groups items submitted within `window` seconds into one call of `fn`.

    - One batch runs at a time: the model behind `fn` is a single copy, and
      items that arrive while it works form the next batch.
    - A batch holds at most `max_batch` items, in submission order; results
      come back to each caller in that order.
    - When `fn` raises for a batch of several items, each item is retried once
      on its own, so one bad item fails alone and the others still get results.
    - Queue bound: at most `max_pending` items wait for dispatch. Past that,
      `submit` raises `BatcherFull` at once, rejecting the new item. Its caller
      learns right away and can mark that one utterance failed (a visible
      caption marker and a metric). Dropping silently would leave a caller
      waiting on nothing and hide the overload; dropping the oldest instead
      would fail an item that has already waited longest.
    - A caller that is cancelled before its item is dispatched takes the item
      out of the queue; after dispatch its result is discarded.
    - No task lives while the queue is empty.
    """

    def __init__(
        self,
        fn: Callable[[list[In]], Awaitable[list[Out]]],
        *,
        window: float = 0.020,
        max_batch: int = 8,
        max_pending: int = 64,
    ) -> None:
        if window < 0 or max_batch < 1 or max_pending < 1:
            raise ValueError("window must be >= 0, max_batch and max_pending >= 1")
        self._fn = fn
        self._window = window
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: deque[_Pending[In, Out]] = deque()
        self._arrived = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Items waiting for dispatch (not counting a batch already running)."""
        return len(self._pending)

    async def submit(self, item: In) -> Out:
        """The result `fn` gives for `item`, or the exception it raised for it alone."""
        if self._closed:
            raise BatcherClosed("batcher is closed")
        if len(self._pending) >= self._max_pending:
            raise BatcherFull(f"{self._max_pending} items already waiting; item rejected")
        loop = asyncio.get_running_loop()
        entry: _Pending[In, Out] = _Pending(item, loop.create_future(), loop.time())
        self._pending.append(entry)
        self._arrived.set()
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch_all(), name="micro-batcher")
        try:
            return await entry.result
        except asyncio.CancelledError:
            if entry in self._pending:
                self._pending.remove(entry)
            raise

    async def close(self) -> None:
        """Fails every waiting caller with `BatcherClosed` and stops the dispatcher."""
        self._closed = True
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            dispatcher.cancel()
            await asyncio.gather(dispatcher, return_exceptions=True)
        while self._pending:
            self._fail(self._pending.popleft(), BatcherClosed("batcher closed"))

    async def _dispatch_all(self) -> None:
        loop = asyncio.get_running_loop()
        batch: list[_Pending[In, Out]] = []
        try:
            while self._pending:
                oldest = self._pending[0].since
                while len(self._pending) < self._max_batch:
                    left = oldest + self._window - loop.time()
                    if left <= 0:
                        break
                    self._arrived.clear()
                    try:
                        async with asyncio.timeout(left):
                            await self._arrived.wait()
                    except TimeoutError:
                        break
                    if not self._pending:
                        break
                    oldest = self._pending[0].since
                count = min(self._max_batch, len(self._pending))
                batch = [self._pending.popleft() for _ in range(count)]
                if batch:
                    await self._run(batch)
                batch = []
        except asyncio.CancelledError:
            for entry in batch:
                self._fail(entry, BatcherClosed("batcher closed during the batch"))
            raise
        finally:
            if self._dispatcher is asyncio.current_task():
                self._dispatcher = None

    async def _run(self, batch: list[_Pending[In, Out]]) -> None:
        try:
            results = await self._call([entry.item for entry in batch])
        except Exception as error:
            if len(batch) == 1:
                self._fail(batch[0], error)
                return
            log.warning("batch of %d failed (%s); retrying items singly", len(batch), error)
            for entry in batch:
                if entry.result.done():
                    continue
                try:
                    [result] = await self._call([entry.item])
                except Exception as single_error:
                    self._fail(entry, single_error)
                else:
                    self._succeed(entry, result)
            return
        for entry, result in zip(batch, results, strict=True):
            self._succeed(entry, result)

    async def _call(self, items: list[In]) -> list[Out]:
        results = await self._fn(items)
        if len(results) != len(items):
            raise RuntimeError(f"batch function gave {len(results)} results for {len(items)} items")
        return results

    @staticmethod
    def _succeed(entry: _Pending[In, Out], result: Out) -> None:
        if not entry.result.done():
            entry.result.set_result(result)

    @staticmethod
    def _fail(entry: _Pending[In, Out], error: BaseException) -> None:
        if not entry.result.done():
            entry.result.set_exception(error)
