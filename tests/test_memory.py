"""The server gives the memory a burst used back to the system, where glibc would keep it,
and frees the reference cycles a closed connection leaves, where CPython would wait."""

from __future__ import annotations

import asyncio
import gc
import re
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from signaling.memory import freeze_start_up, release_free_memory
from tests.fixtures.server import ServerFactory
from tests.fixtures.webrtc import PeerFactory
from tests.test_bad_input import eventually

BURST_MB = 64

needs_malloc_trim = pytest.mark.skipif(
    not release_free_memory(), reason="the C library has no malloc_trim (not glibc)"
)


def rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


def burst_freed_below_a_live_block() -> tuple[bytes, float]:
    """Uses `BURST_MB` in 64 KB blocks (each its own malloc, touched), frees them, and
    keeps one block allocated after them: the heap cannot shrink past it, so glibc keeps
    the freed memory. Returns the live block (keep it) and RSS with the burst freed."""
    blocks = [b"\x01" * 65536 for _ in range(BURST_MB * 16)]
    above = b"\x02" * 65536
    del blocks
    return above, rss_mb()


@needs_malloc_trim
def test_release_free_memory_returns_a_freed_burst() -> None:
    above, held = burst_freed_below_a_live_block()
    assert release_free_memory()
    assert rss_mb() < held - BURST_MB / 2
    del above


@needs_malloc_trim
async def test_the_server_returns_freed_memory_on_its_own(
    babblefish_factory: ServerFactory,
) -> None:
    await babblefish_factory(memory_trim_interval=0.05)
    above, held = burst_freed_below_a_live_block()
    await eventually(lambda: rss_mb() < held - BURST_MB / 2)
    del above


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle, like a closed peer connection's transports


def unreachable_cycle() -> weakref.ref[_Node]:
    """A reference cycle nothing else holds: only the cyclic collector frees it."""
    return weakref.ref(_Node())


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("no_automatic_collection")
async def test_the_server_frees_reference_cycles_on_its_own(
    babblefish_factory: ServerFactory,
) -> None:
    await babblefish_factory(memory_trim_interval=0.05)
    gone = unreachable_cycle()
    assert gone() is not None  # only the cyclic collector can free it
    await eventually(lambda: gone() is None)


@pytest.mark.usefixtures("no_automatic_collection")
async def test_no_collection_stalls_the_loop_while_a_room_is_open(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    server = await babblefish_factory(memory_trim_interval=0.01)
    alice = await peer_factory(server)
    await alice.join("open", "Alice", "eng")
    gone = unreachable_cycle()
    await asyncio.sleep(0.2)  # twenty intervals
    assert gone() is not None
    await alice.send({"type": "leave"})
    await eventually(lambda: gone() is None)


def test_start_up_objects_are_frozen_out_of_the_collectors_walks() -> None:
    before = _Node()
    try:
        assert freeze_start_up() > 0
        after = _Node()  # what the server makes once it runs is still collected
        tracked = {id(o) for o in gc.get_objects()}
        assert id(before) not in tracked and id(after) in tracked
    finally:
        gc.unfreeze()
