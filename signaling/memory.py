"""Giving freed memory back to the system.

glibc keeps the memory a burst used (1,000 sockets at once, a storm of peer connections
whose DTLS, SRTP and Opus state lives in C, in each receiving thread's own arena) for
reuse, and returns only what lies at the very top of its heap. A server that rides out
such bursts would keep its high-water mark for good; `malloc_trim` gives back every free
page, and costs a few milliseconds, so it runs on a worker thread now and then.

Much of what a burst leaves is not free yet, though: a closed peer connection is a web of
reference cycles (aiortc's transports, transceivers and their callbacks) that only the
cyclic garbage collector frees, and CPython runs a full collection only once the objects
that survived since the last one reach a quarter of all long-lived objects. Start-up
makes 550,000 of them (torch, transformers, aiortc): an idle server never gets there, and
a busy one then stalls its event loop for about half a second to walk them all (measured
with the translation modules imported, 2 cores). So start-up's objects
are frozen out of the collector (`freeze_start_up`), and each trim first collects what
the server made since, on the loop, where asyncio's finalizers must run. That still walks
every live connection (50-90 ms with 20 people in a room or 1,000 sockets open), longer
than a 20 ms mixer tick: it is skipped while any room is open, where someone's audio
would stall, and CPython's own collector, cheaper now that start-up is frozen, frees
cycles meanwhile.

Trimming cannot give back a page that one live object pins, and a storm of peer
connections leaves many such pages in glibc's heap: the soak (bench/soak.py) kept 11-18 %
over its warm-up under glibc, whatever the trim. jemalloc packs allocations of a size
together and returns whole unused extents by itself, so `--allocator jemalloc` restarts the
server on it, with Python's objects in it too (`PYTHONMALLOC=malloc`): 4.1 % there, at the
same cascade latency (`dirty_decay_ms:0`, returning pages at once, slowed whisper by 0.3 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from ctypes.util import find_library

from aiohttp import web

TRIM_INTERVAL_SECONDS = 60.0

ALLOCATORS = ("system", "jemalloc")
JEMALLOC_CONF = "background_thread:true,narenas:1,dirty_decay_ms:1000,muzzy_decay_ms:0"
"""A background thread returns pages unused for a second; one arena, because this
server's few threads allocate little each and a second arena is a second high-water mark.
An operator's own `MALLOC_CONF` wins."""

_RESTARTED = "BABBLEFISH_ALLOCATOR_RESTARTED"
"""Set in the restarted process, so that a preload the loader ignored cannot loop."""

log = logging.getLogger(__name__)


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)  # glibc only (not musl, not macOS)
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_MALLOC_TRIM = _find_malloc_trim()


def release_free_memory() -> bool:
    """Return the C allocator's free pages to the system (blocking: call it off the
    event loop). False where the C library has no `malloc_trim`."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def freeze_start_up() -> int:
    """Moves every object alive now (modules, models, the app) out of the cyclic garbage
    collector's sight: none of them is garbage, and walking them is what makes a full
    collection slow. Call it once, after start-up; returns how many objects it froze."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def trim_memory_periodically(
    interval: float = TRIM_INTERVAL_SECONDS, rooms_open: Callable[[], bool] = lambda: False
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context: every `interval` seconds while the app runs, collect
    cyclic garbage unless `rooms_open()` (someone's audio would stall), then
    `release_free_memory` on a worker thread (never with `interval` 0)."""

    async def trimming(app: web.Application) -> AsyncIterator[None]:
        if interval <= 0:
            yield
            return
        task = asyncio.create_task(_trim_every(interval, rooms_open), name="memory-trim")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return trimming


async def _trim_every(interval: float, rooms_open: Callable[[], bool]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        if not rooms_open():
            started = time.perf_counter()
            freed = gc.collect()
            log.debug("collected %d unreachable objects in %.1f ms", freed,
                      (time.perf_counter() - started) * 1000)
        if _MALLOC_TRIM is None:
            continue
        try:
            await loop.run_in_executor(None, release_free_memory)
        except RuntimeError:  # the executor is shutting down with the server
            return


def running_allocator() -> str:
    """"jemalloc" when this process runs on it (preloaded or linked), else "system"."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            return "jemalloc" if any("libjemalloc" in line for line in maps) else "system"
    except OSError:  # no procfs (not Linux)
        return "system"


class AllocatorUnavailable(RuntimeError):
    pass


def restart_on(allocator: str, env: Mapping[str, str] = os.environ) -> None:
    """Make sure this process runs on `allocator`: for jemalloc, replace it (same pid, same
    command line) with one that preloads the library. Call it first thing in `main`,
    before threads or sockets exist. Raises `AllocatorUnavailable` with what to do."""
    if allocator == "system" or running_allocator() == allocator:
        return
    if env.get(_RESTARTED):
        raise AllocatorUnavailable(
            "--allocator jemalloc: the restarted server is still not running on jemalloc "
            f"(LD_PRELOAD={env.get('LD_PRELOAD', '')!r} was not loaded)"
        )
    library = find_library("jemalloc")
    if library is None:
        raise AllocatorUnavailable(
            "--allocator jemalloc: libjemalloc is not installed "
            "(Debian/Ubuntu: apt-get install libjemalloc2)"
        )
    preload = " ".join(filter(None, [library, env.get("LD_PRELOAD")]))
    restarted = {
        **env, "LD_PRELOAD": preload, "PYTHONMALLOC": "malloc",
        "MALLOC_CONF": env.get("MALLOC_CONF", JEMALLOC_CONF), _RESTARTED: "1",
    }
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], restarted)
