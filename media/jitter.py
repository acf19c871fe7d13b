"""A small playout buffer between a decoded inbound stream and the mixer's 20 ms ticks."""

from __future__ import annotations

from collections import deque

import numpy as np

from media.frames import FRAME_SAMPLES, Pcm

PREFILL_FRAMES = 2
"""After running dry, wait for this many frames: absorbs 20 ms of arrival jitter against
the mixer's tick phase, at the cost of one frame of latency."""

CAPACITY_FRAMES = 6
"""Beyond this (120 ms) the oldest frame is dropped: a burst must not become lasting delay."""

TRIM_WINDOW = 50
"""Ticks (1 s) over which the buffer's lowest depth is watched to trim standing latency."""


class JitterBuffer:
    """Re-chunks decoded audio into 20 ms frames and hands out one per tick.

    Bounded: when full, the oldest frame is dropped (`dropped` counts them). When the
    sender's clock runs a little fast, the depth never falls back to the prefill level;
    one frame is then dropped per second (`trimmed`) so latency stays low. When nobody
    popped for more than a whole buffer of frames (the mixer of a silent room sleeps), the
    next pop keeps only the newest `prefill` frames (`resynced`), so speech that wakes the
    mixer plays with the usual delay, not behind stale silence.
    """

    def __init__(
        self,
        prefill: int = PREFILL_FRAMES,
        capacity: int = CAPACITY_FRAMES,
        trim_window: int = TRIM_WINDOW,
    ) -> None:
        if not 1 <= prefill <= capacity:
            raise ValueError("need 1 <= prefill <= capacity")
        self.prefill = prefill
        self.trim_window = trim_window
        self._frames: deque[Pcm] = deque(maxlen=capacity)
        self._partial = np.zeros(0, np.float32)
        self._priming = True
        self._min_depth = capacity
        self._pops = 0
        self.dropped = 0
        self.trimmed = 0
        self.underruns = 0
        self.resynced = 0
        self._pushed_since_pop = 0

    @property
    def depth(self) -> int:
        return len(self._frames)

    def push(self, pcm: Pcm) -> None:
        samples = np.concatenate((self._partial, pcm)) if len(self._partial) else pcm
        whole = len(samples) // FRAME_SAMPLES * FRAME_SAMPLES
        for start in range(0, whole, FRAME_SAMPLES):
            if len(self._frames) == self._frames.maxlen:
                self.dropped += 1
            self._frames.append(samples[start : start + FRAME_SAMPLES])
            self._pushed_since_pop += 1
        self._partial = samples[whole:].copy()

    def pop(self) -> Pcm | None:
        if self._pushed_since_pop > (self._frames.maxlen or 0):
            while len(self._frames) > self.prefill:
                self._frames.popleft()
            self.resynced += 1
            self._priming = False
            self._min_depth = len(self._frames)
            self._pops = 0
        self._pushed_since_pop = 0
        if self._priming:
            if len(self._frames) < self.prefill:
                return None
            self._priming = False
        if not self._frames:
            self.underruns += 1
            self._priming = True
            return None
        self._watch_depth()
        return self._frames.popleft()

    def _watch_depth(self) -> None:
        self._min_depth = min(self._min_depth, len(self._frames))
        self._pops += 1
        if self._pops < self.trim_window:
            return
        if self._min_depth > self.prefill:
            self._frames.popleft()
            self.trimmed += 1
        self._pops = 0
        self._min_depth = len(self._frames)
