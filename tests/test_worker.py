"""PriorityWorker: the most urgent job first, equal ones in order, cancellation, shutdown."""

import threading

import pytest

from ai.worker import PriorityWorker


def test_lower_priority_numbers_run_first_and_ties_in_arrival_order() -> None:
    worker = PriorityWorker("test")
    gate = threading.Event()
    ran: list[str] = []
    blocker = worker.submit(0, gate.wait)  # holds the thread while the others queue
    jobs = [worker.submit(p, ran.append, name) for p, name in
            [(1, "later-a"), (0, "first-a"), (1, "later-b"), (0, "first-b")]]
    gate.set()
    for job in [blocker, *jobs]:
        job.result(timeout=10)
    assert ran == ["first-a", "first-b", "later-a", "later-b"]
    worker.shutdown()


def test_errors_reach_the_caller_and_cancelled_or_shut_down_jobs_never_run() -> None:
    worker = PriorityWorker("test")
    with pytest.raises(ZeroDivisionError):
        worker.submit(0, lambda: 1 / 0).result(timeout=10)
    gate, running = threading.Event(), threading.Event()

    def block() -> bool:
        running.set()
        return gate.wait()

    ran: list[str] = []
    blocker = worker.submit(0, block)
    assert running.wait(timeout=10)
    cancelled = worker.submit(0, ran.append, "cancelled")
    dropped = worker.submit(0, ran.append, "dropped at shutdown")
    assert cancelled.cancel()
    worker.shutdown(wait=False)  # waiting here would wait on the blocked job
    gate.set()
    assert blocker.result(timeout=10) is True
    worker.shutdown()  # now returns: the running job ended and its thread with it
    assert dropped.cancelled() and ran == []
    with pytest.raises(RuntimeError, match="shut down"):
        worker.submit(0, ran.append, "too late")
