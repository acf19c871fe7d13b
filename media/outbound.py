"""A listener's downstream track: pre-encoded Opus packets, paced by the room mixer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from fractions import Fraction

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.frames import MIX_RATE

QUEUE_PACKETS = 5
"""At most 100 ms waits for the sender; when full the oldest packet is dropped, so a
stalled connection resumes with current audio instead of stale seconds."""

TIME_BASE = Fraction(1, MIX_RATE)


class ListenerTrack(MediaStreamTrack):
    """Yields `av.Packet`s, so aiortc's sender packetizes them without encoding again.

    The mixer pushes one packet per 20 ms tick; `recv` therefore needs no pacing of its own.
    """

    kind = "audio"

    def __init__(self, capacity: int = QUEUE_PACKETS) -> None:
        super().__init__()
        self._queue: asyncio.Queue[av.Packet | None] = asyncio.Queue(capacity)
        self.dropped = 0
        self.sent = 0
        self.on_connected: Callable[[], None] = lambda: None
        """Called when a sender first asks for a packet: a listener's media just connected."""

    def push(self, payload: bytes, pts: int) -> None:
        """Queue one Opus packet; `pts` counts 48 kHz samples on this track's own clock."""
        if self.readyState != "live":
            return
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = TIME_BASE
        self._put(packet)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self.sent == 0 and self._queue.empty():
            self.on_connected()
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        self.sent += 1
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            self._put(None)  # wakes a pending recv() so the sender's loop ends

    def _put(self, item: av.Packet | None) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)
