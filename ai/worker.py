"""One worker thread that runs the most urgent job first.

A model with a single copy runs one job at a time; when jobs queue for it, the
order decides who waits. `PriorityWorker` takes the lowest priority number
first (a number or a deadline), and jobs of equal priority in the order they came.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

class WorkerClosed(RuntimeError):
    """The worker was shut down (the server is stopping); the job was never run."""


_Job = tuple[float, int, "Future[Any]", Callable[[], Any]]


class PriorityWorker:
    """A one-thread executor ordered by priority. Queue: unbounded here; its callers bound it."""

    def __init__(self, name: str) -> None:
        self._jobs: list[_Job] = []
        self._arrivals = itertools.count()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, priority: float, fn: Callable[..., T], *args: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._wake:
            if self._closed:
                raise WorkerClosed("the worker is shut down")
            heapq.heappush(self._jobs, (priority, next(self._arrivals), future, lambda: fn(*args)))
            self._wake.notify()
        return future

    def shutdown(self, wait: bool = True) -> None:
        """Cancels the jobs not started; with `wait`, returns once the running one ended.

        Wait before the process exits: the thread is a daemon, and one still inside a
        native call (ONNX Runtime, torch) at interpreter exit aborts the process with
        "terminate called without an active exception" (exit 134) as the runtime's own
        threads are torn down under it.
        """
        with self._wake:
            self._closed = True
            for _, _, future, _ in self._jobs:
                future.cancel()
            self._jobs.clear()
            self._wake.notify_all()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._jobs and not self._closed:
                    self._wake.wait()
                if not self._jobs:
                    return
                _, _, future, call = heapq.heappop(self._jobs)
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it waited
            try:
                future.set_result(call())
            except BaseException as error:  # handed to whoever awaits the future
                future.set_exception(error)
