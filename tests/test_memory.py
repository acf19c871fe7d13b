"""The server gives the memory a burst used back to the system, where glibc would keep it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from signaling.memory import release_free_memory
from tests.fixtures.server import ServerFactory
from tests.test_bad_input import eventually

BURST_MB = 64

pytestmark = pytest.mark.skipif(
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


def test_release_free_memory_returns_a_freed_burst() -> None:
    above, held = burst_freed_below_a_live_block()
    assert release_free_memory()
    assert rss_mb() < held - BURST_MB / 2
    del above


async def test_the_server_returns_freed_memory_on_its_own(
    babblefish_factory: ServerFactory,
) -> None:
    await babblefish_factory(memory_trim_interval=0.05)
    above, held = burst_freed_below_a_live_block()
    await eventually(lambda: rss_mb() < held - BURST_MB / 2)
    del above
