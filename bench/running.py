"""Running a bench that starts a server of its own."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, where SIGTERM cancels `main` as Ctrl-C does. Python's default
    SIGTERM ends the process at once, skipping the `finally` that stops the server the
    bench started, which then runs on and spoils the next measurement."""

    async def cancelled_by_sigterm() -> T:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await main

    try:
        return asyncio.run(cancelled_by_sigterm())
    except asyncio.CancelledError:
        raise SystemExit(128 + signal.SIGTERM) from None
