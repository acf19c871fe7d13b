"""Audio placed on the server's clock, so that streams from different phones line up.

Positions are sample indices at 16 kHz of `time.monotonic()` seconds. A microphone chunk
sits where it was received: the stream time (RTP) keeps the samples of
one stream contiguous, and the offset between the stream clock and the server clock is
taken once, at the first chunk. What is left unknown between two streams (network paths,
jitter buffers, the acoustic path) is a lag that correlation measures.
"""

from __future__ import annotations

import numpy as np

from media.frames import Pcm

RATE = 16_000
FRAME = RATE // 50
"""Samples in one 20 ms frame."""

REANCHOR_SECONDS = 1.0
"""A stream whose clock jumps by more than this against the server's is placed afresh."""


def position(seconds: float) -> int:
    return round(seconds * RATE)


class Timeline:
    """A ring of the last `seconds` of one stream, addressed by absolute position.

    Samples never written (a gap, a silent tick) read as zeros. `end` is one past the
    newest sample written.
    """

    def __init__(self, seconds: float = 8.0) -> None:
        self._size = position(seconds)
        self._samples = np.zeros(self._size, np.float32)
        self.end: int | None = None

    @property
    def capacity(self) -> int:
        return self._size

    def write(self, start: int, samples: Pcm) -> None:
        count = len(samples)
        if count > self._size:
            samples, start, count = samples[-self._size :], start + count - self._size, self._size
        if self.end is not None and start > self.end:
            self._clear(self.end, min(start, self.end + self._size))
        self._put(start, samples)
        if self.end is None or start + count > self.end:
            self.end = start + count

    def read(self, start: int, count: int) -> Pcm:
        """`count` samples from `start`; zeros for what is unwritten or already overwritten."""
        out = np.zeros(count, np.float32)
        if self.end is None:
            return out
        lo, hi = max(start, self.end - self._size), min(start + count, self.end)
        if hi > lo:
            first = lo % self._size
            span = hi - lo
            head = min(span, self._size - first)
            out[lo - start : lo - start + head] = self._samples[first : first + head]
            out[lo - start + head : hi - start] = self._samples[: span - head]
        return out

    def _put(self, start: int, samples: Pcm) -> None:
        first = start % self._size
        head = min(len(samples), self._size - first)
        self._samples[first : first + head] = samples[:head]
        self._samples[: len(samples) - head] = samples[head:]

    def _clear(self, start: int, stop: int) -> None:
        self._put(start, np.zeros(stop - start, np.float32))


class StreamClock:
    """Places one stream's chunks on the server clock: received time of the first chunk
    plus stream time since, so network jitter does not tear the stream apart.

    A stream never runs backwards on the server clock. When its offset jumps back (its
    first chunk came in late, then the rest caught up; or a new peer connection restarted
    the stream time), the chunk is placed where the last one ended: placed in the past,
    it would be read back over audio already passed on, which the VAD would hear twice.
    """

    def __init__(self) -> None:
        self._offset: int | None = None
        self._end: int | None = None

    def place(self, stream_time: float, received: float, samples: int) -> int:
        """Timeline position of the first of a chunk's `samples`."""
        offset = position(received) - position(stream_time)
        if self._offset is None or abs(offset - self._offset) > position(REANCHOR_SECONDS):
            self._offset = offset
        start = position(stream_time) + self._offset
        if self._end is not None and start < self._end:
            self._offset += self._end - start
            start = self._end
        self._end = start + samples
        return start
