"""Acoustic echo cancellers with a 20 ms, 16 kHz frame interface.

`WebRtcCanceller` wraps WebRTC's audio processing module (AEC3) through the
`aec-audio-processing` bindings: an adaptive linear filter, its own delay estimator, and
a residual echo suppressor that models the room's reverberation.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from aec_audio_processing import AudioProcessor

from media.frames import Pcm
from media.timeline import FRAME, RATE


class Canceller(Protocol):
    def process(self, mic: Pcm, reference: Pcm) -> Pcm:
        """One 20 ms microphone frame with the echo of `reference` (the same 20 ms of
        what the loudspeaker played, slightly ahead of its echo) taken out."""
        ...


def to_int16(samples: Pcm) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def from_int16(data: bytes) -> Pcm:
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0


class WebRtcCanceller:
    """AEC3 alone: noise suppression, gain control and its VAD stay off, so what comes
    out differs from what went in only by the echo."""

    def __init__(self) -> None:
        self._apm = AudioProcessor(
            enable_aec=True, enable_ns=False, enable_agc=False, enable_vad=False
        )
        self._apm.set_stream_format(RATE, 1, RATE, 1)
        self._apm.set_reverse_stream_format(RATE, 1)
        self._apm.set_stream_delay(0)
        self._step = int(self._apm.get_frame_size())
        if FRAME % self._step:
            raise RuntimeError(f"AEC3 frame of {self._step} samples does not divide 20 ms")

    def process(self, mic: Pcm, reference: Pcm) -> Pcm:
        # Converted once per frame and cut as bytes: per 10 ms piece, the conversions
        # cost a third as much again as AEC3 itself.
        mic16, reference16 = to_int16(mic), to_int16(reference)
        step = 2 * self._step
        out = []
        for start in range(0, 2 * FRAME, step):
            self._apm.process_reverse_stream(reference16[start : start + step])
            out.append(self._apm.process_stream(mic16[start : start + step]))
        return from_int16(b"".join(out))
