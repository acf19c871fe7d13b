"""A peak limiter for summed voices: never clips, and never changes gain in a step upward."""

from __future__ import annotations

import numpy as np

from media.frames import Pcm

CEILING = 0.95
"""Peak level the limiter holds a mix under, leaving headroom for the codec's overshoot."""

RELEASE_PER_FRAME = 0.05
"""How much gain may come back per 20 ms frame: full recovery from -6 dB in about 200 ms."""


class Limiter:
    """Instant attack, ramped release, applied to whole 20 ms frames.

    Attack is instant (the gain for a frame is low enough for its loudest sample), so the
    output never exceeds CEILING. Release ramps the gain back up across the frame so that
    a loud word ending does not pump the next quiet one.
    """

    def __init__(self, ceiling: float = CEILING, release: float = RELEASE_PER_FRAME) -> None:
        self.ceiling = ceiling
        self.release = release
        self.gain = 1.0

    def __call__(self, pcm: Pcm) -> Pcm:
        peak = float(np.max(np.abs(pcm))) if len(pcm) else 0.0
        allowed = 1.0 if peak <= self.ceiling else self.ceiling / peak
        if allowed <= self.gain:
            self.gain = allowed
            return pcm if allowed == 1.0 else (pcm * np.float32(allowed)).astype(np.float32)
        target = min(allowed, self.gain + self.release)
        # Every point of the ramp lies between the old gain and `target`, both <= `allowed`.
        ramp = np.linspace(self.gain, target, len(pcm), dtype=np.float32)
        self.gain = target
        return (pcm * ramp).astype(np.float32)
