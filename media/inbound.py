"""A participant's microphone as the server receives it: mix source, level, 16 kHz feed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media.frames import FRAME_SAMPLES, MIX_RATE, Pcm, SourceFrame
from media.jitter import JitterBuffer
from media.resample import Decimator

log = logging.getLogger(__name__)

GATE_DBFS = -50.0
"""Frames quieter than this (RMS) count as not speaking. Browsers' noise suppression and AGC
keep room noise well below it and speech well above it."""

GATE_HOLD_FRAMES = 15
"""The gate stays open 300 ms after the last loud frame, so word gaps are not cut out."""

LEVEL_FLOOR_DBFS = -60.0


@dataclass(frozen=True, slots=True)
class Chunk16k:
    """Mono float32 samples at 16 kHz, as one decoded packet's worth."""

    samples: Pcm
    time: float
    """Seconds on the participant's stream clock (RTP time) of the first sample."""
    received: float
    """`time.monotonic()` when the packet was decoded."""


def to_mono(frame: av.AudioFrame) -> Pcm:
    """48 kHz float32 mono from a decoded frame (aiortc gives s16 packed stereo)."""
    if frame.sample_rate != MIX_RATE:
        raise ValueError(f"expected {MIX_RATE} Hz audio, got {frame.sample_rate} Hz")
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    planar = frame.format.is_planar
    by_channel = data.reshape(channels, -1) if planar else data.reshape(-1, channels).T
    mono = by_channel[0].astype(np.float32)
    for other in by_channel[1:]:
        mono += other
    full_scale = _FULL_SCALE.get(data.dtype.name, 1.0)
    mono *= np.float32(1.0 / (full_scale * channels))
    return mono


_FULL_SCALE = {"int16": 32768.0, "int32": 2147483648.0}


def rms_dbfs(pcm: Pcm) -> float:
    power = float(np.dot(pcm, pcm)) / len(pcm) if len(pcm) else 0.0
    return 10.0 * math.log10(power) if power > 1e-12 else -120.0


class InboundAudio:
    """Receives one participant's decoded track; a `MixSource` for the room mixer.

    Exists from the moment the participant joins, so observers can subscribe before media
    flows; `attach` starts reading once the peer connection delivers the track. Per packet
    the work is tens of microseconds (mono fold, level, decimation), so it runs on the loop.
    """

    def __init__(self, participant_id: str, lang: str, jitter: JitterBuffer | None = None) -> None:
        self.participant_id = participant_id
        self.lang = lang
        """The language this participant speaks now, which their voice's frames carry: the
        room keeps it to `Participant.speaking` (pinned, detected, or as heard)."""
        self.jitter = jitter or JitterBuffer()
        self.dropped_16k = 0
        self._subscribers: list[asyncio.Queue[Chunk16k]] = []
        self._decimator = Decimator()
        self._reader: asyncio.Task[None] | None = None
        self._peak_db = -120.0
        self._gate_hold = 0
        self._samples_seen = 0
        self._wake: Callable[[], None] | None = None

    @property
    def attached(self) -> bool:
        return self._reader is not None

    def attach(self, track: MediaStreamTrack) -> None:
        if self._reader is not None:
            raise RuntimeError("a track is already attached")
        self._reader = asyncio.create_task(self._read(track), name=f"inbound-{self.participant_id}")

    async def detach(self) -> None:
        """Stop reading the track; another may be attached later (a reconnected peer).
        Subscribers keep their queues: the 16 kHz feed pauses, it does not end."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def close(self) -> None:
        await self.detach()

    # WakingSource
    @property
    def pending(self) -> bool:
        """Frames above the gate may be buffered, or the gate's hold is still open."""
        return self._gate_hold > 0

    def wake_with(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    def pull(self) -> SourceFrame | None:
        pcm = self.jitter.pop()
        if pcm is None:
            return None
        if rms_dbfs(pcm) >= GATE_DBFS:
            self._gate_hold = GATE_HOLD_FRAMES
        elif self._gate_hold > 0:
            self._gate_hold -= 1
        else:
            return None
        return SourceFrame(pcm, self.participant_id, "voice", self.lang)

    def subscribe_16k(self, maxsize: int = 500) -> asyncio.Queue[Chunk16k]:
        """A queue of this microphone at 16 kHz for the speech pipeline.

        Bounded: when the consumer falls `maxsize` chunks (20 ms each) behind, the oldest
        chunk is dropped and `dropped_16k` counts it, so a slow pipeline never stalls media.
        """
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        queue: asyncio.Queue[Chunk16k] = asyncio.Queue(maxsize)
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Chunk16k]) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(queue)

    def take_level(self) -> float:
        """Loudest 20 ms RMS since the last call, 0 at -60 dBFS or below, 1 at full scale."""
        level = (max(self._peak_db, LEVEL_FLOOR_DBFS) - LEVEL_FLOOR_DBFS) / -LEVEL_FLOOR_DBFS
        self._peak_db = -120.0
        return min(level, 1.0)

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            self.receive(to_mono(frame), self._stream_time(frame), time.monotonic())

    def receive(self, pcm: Pcm, stream_time: float, received: float) -> None:
        """Take one decoded packet's audio (48 kHz mono); `attach` calls this per frame."""
        self.jitter.push(pcm)
        frames = range(0, len(pcm), FRAME_SAMPLES)
        loudest = max((rms_dbfs(pcm[i : i + FRAME_SAMPLES]) for i in frames), default=-120.0)
        self._peak_db = max(self._peak_db, loudest)
        if loudest >= GATE_DBFS and self._wake is not None:
            self._wake()
        if self._subscribers:
            chunk = Chunk16k(self._decimator(pcm), stream_time, received)
            for queue in self._subscribers:
                if queue.full():
                    queue.get_nowait()
                    self.dropped_16k += 1
                queue.put_nowait(chunk)

    def _stream_time(self, frame: av.AudioFrame) -> float:
        counted = self._samples_seen / MIX_RATE
        self._samples_seen += frame.samples
        if frame.pts is not None and frame.time_base is not None:
            return float(frame.pts * frame.time_base)
        return counted
