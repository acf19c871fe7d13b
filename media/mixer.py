"""The room mixer: per 20 ms tick, one mix and one Opus encode per distinct listener mix."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from media.frames import FRAME_MS, FRAME_SAMPLES, MixSource, Pcm, SourceFrame, WakingSource
from media.limiter import Limiter
from media.mix_policy import MixSettings
from media.opus import OpusEncoder, silence_packet
from media.outbound import ListenerTrack

log = logging.getLogger(__name__)

TICK_SECONDS = FRAME_MS / 1000

INLINE_ENCODES = 2
"""Mixes per tick encoded on the event loop (about 0.1 ms each); more go to the executor."""

MAX_CATCH_UP = 0.1
"""Seconds behind schedule up to which the mixer runs late ticks back to back."""

QUIET_TICKS_BEFORE_SLEEP = 150
"""After 3 s in which no source gave a frame, a mixer whose sources are all `WakingSource`s
and none `pending` stops ticking until one wakes it: a silent or empty room costs nothing
(500 idle rooms took a whole core at 50 ticks a second each). Listeners then get no packets,
a gap their decoders play as silence, as with Opus DTX."""

STREAM_IDLE_TICKS = 50
"""An encode stream unused for 1 s is dropped; until then a mix that comes back (the same
speakers after a pause) continues the same encoder, so its listeners' decoders see one
continuous Opus stream."""


@dataclass(eq=False)
class Listener:
    """Someone the mixer feeds: `mix` carries what a gain policy needs to know about them."""

    id: str
    lang: str
    mix: MixSettings = field(default_factory=MixSettings)
    track: ListenerTrack = field(default_factory=ListenerTrack)
    first_tick: int = 0


GainPolicy = Callable[[Listener, SourceFrame, Sequence[SourceFrame]], float]
"""How loud `frame` is in `listener`'s mix, given every frame active this tick (so a policy
can duck originals while a translation plays). 0 leaves the frame out."""


def original_voices(listener: Listener, frame: SourceFrame, active: Sequence[SourceFrame]) -> float:
    """Hear the other people who speak your language, at full level; never yourself."""
    if frame.kind == "voice" and frame.lang == listener.lang and frame.origin != listener.id:
        return 1.0
    return 0.0


MixKey = tuple[tuple[str, float], ...]
"""Which sources, at which gains: listeners with equal keys share one mix and one encode."""


@dataclass(eq=False)
class _EncodeStream:
    encoder: OpusEncoder | None = None
    limiter: Limiter = field(default_factory=Limiter)
    idle_ticks: int = 0


@dataclass
class MixStats:
    ticks: int = 0
    late_ticks: int = 0
    """Ticks that started more than half a tick after their deadline."""
    skipped_ticks: int = 0
    """Ticks never run because the mixer was `MAX_CATCH_UP` or more behind."""
    encoded_frames: int = 0
    listeners: int = 0
    encode_streams: int = 0
    """Distinct non-silent mixes encoded in the last tick (silent listeners share a
    pre-encoded silence packet and cost no encoding)."""
    sleeps: int = 0
    """Times the mixer stopped ticking because its room was silent."""


MixTap = Callable[[str, Pcm | None, float], None]
"""Told, per tick, each listener's id, the audio they were sent (None: silence) and the
tick's due time on `time.monotonic()`: a phone plays each tick at its media time, which
keeps that steady 20 ms grid however late the tick actually ran."""


def _mix_and_encode(
    jobs: Sequence[tuple[_EncodeStream, Sequence[tuple[Pcm, float]]]],
    encoder_factory: Callable[[], OpusEncoder],
) -> list[tuple[bytes, Pcm]]:
    encoded = []
    for stream, parts in jobs:
        mix = np.zeros(FRAME_SAMPLES, np.float32)
        for pcm, gain in parts:
            mix += pcm if gain == 1.0 else pcm * np.float32(gain)
        if stream.encoder is None:
            stream.encoder = encoder_factory()
        limited = stream.limiter(mix)
        encoded.append((stream.encoder.encode(limited), limited))
    return encoded


class RoomMixer:
    """Pulls every source once per tick and sends each listener its own mix.

    Listeners are grouped by `MixKey`; each group is summed, limited and Opus-encoded once,
    and every track in the group gets the same bytes. All sources of a tick are summed in
    that tick, so no source is a frame behind another.

    Timing: ticks follow a monotonic schedule (start + n * 20 ms), so lateness never
    accumulates. A late tick runs at once, so after a short stall (a busy loop, a GC pause)
    the mixer catches up within a few ticks and loses no audio; listeners' jitter buffers
    absorb the burst. Once it is `MAX_CATCH_UP` or more behind, the missed ticks are skipped
    instead: listeners see a timestamp gap (their decoder conceals it), not a lasting delay.

    Mixing and encoding run in `executor` (the loop's default when None) once a tick has
    more than `INLINE_ENCODES` mixes to encode. Up to that, they run on the loop: one
    encode takes about 0.1 ms, less than the CPU of a hop to a thread and back (about
    0.12 ms), so a room with one speaker pays no hop. A tick where everyone hears silence
    encodes nothing at all.
    """

    def __init__(
        self,
        policy: GainPolicy = original_voices,
        *,
        executor: Executor | None = None,
        encoder_factory: Callable[[], OpusEncoder] = OpusEncoder,
    ) -> None:
        self.policy = policy
        self.stats = MixStats()
        self._executor = executor
        self._encoder_factory = encoder_factory
        self._listeners: dict[str, Listener] = {}
        self._sources: dict[str, MixSource] = {}
        self._streams: dict[MixKey, _EncodeStream] = {}
        self._taps: list[MixTap] = []
        self._silence = silence_packet()
        self._next_tick = 0
        self._runner: asyncio.Task[None] | None = None
        self._quiet_ticks = 0
        self._awake = asyncio.Event()
        self.sleeping = False

    @property
    def listeners(self) -> Sequence[Listener]:
        return list(self._listeners.values())

    @property
    def sources(self) -> dict[str, MixSource]:
        return dict(self._sources)

    def add_listener(self, listener: Listener) -> Listener:
        if listener.id in self._listeners:
            raise ValueError(f"listener {listener.id} is already mixed for")
        listener.first_tick = self._next_tick
        self._listeners[listener.id] = listener
        listener.track.on_connected = self.wake
        self.wake()
        return listener

    def remove_listener(self, listener_id: str) -> None:
        listener = self._listeners.pop(listener_id, None)
        if listener is not None:
            listener.track.stop()

    def add_tap(self, tap: MixTap) -> None:
        """Call `tap` every tick with each listener's mix, the very PCM that was encoded
        for them (echo cancellers use it as their reference). Taps run on the loop and
        must be quick; the mix is shared by listeners with equal mixes, so do not modify
        it."""
        self._taps.append(tap)

    def remove_tap(self, tap: MixTap) -> None:
        with contextlib.suppress(ValueError):
            self._taps.remove(tap)

    def _tell_taps(self, listener_id: str, pcm: Pcm | None, due: float) -> None:
        for tap in list(self._taps):
            try:
                tap(listener_id, pcm, due)
            except Exception:
                log.exception("mix tap failed; removing it")
                self.remove_tap(tap)

    def add_source(self, key: str, source: MixSource) -> None:
        """Mix `source` from the next tick; `key` names it in `MixKey`s (a participant id
        for voices, e.g. "translation:spa" for a playout)."""
        if key in self._sources:
            raise ValueError(f"source {key} is already mixed")
        self._sources[key] = source
        if isinstance(source, WakingSource):
            source.wake_with(self.wake)
        self.wake()

    def remove_source(self, key: str) -> None:
        self._sources.pop(key, None)

    def wake(self) -> None:
        """Tick again if asleep: a source has audio, or the room changed."""
        self._quiet_ticks = 0
        self._awake.set()

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name="room-mixer")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        for listener_id in list(self._listeners):
            self.remove_listener(listener_id)
        self._sources.clear()
        self._streams.clear()

    async def tick(self, due: float | None = None) -> None:
        """Mix and send one 20 ms frame to every listener; `due` is when the schedule
        wanted it (now when None)."""
        due = time.monotonic() if due is None else due
        tick = self._next_tick
        self._next_tick += 1
        frames = self._pull()
        self._quiet_ticks = 0 if frames else self._quiet_ticks + 1
        active = list(frames.values())
        groups: dict[MixKey, list[Listener]] = {}
        for listener in list(self._listeners.values()):
            key = self._key(listener, frames, active)
            groups.setdefault(key, []).append(listener)

        audible = [key for key in groups if key]
        jobs = [
            (self._stream(key), [(frames[source].pcm, gain) for source, gain in key])
            for key in audible
        ]
        if len(jobs) > INLINE_ENCODES:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(
                self._executor, _mix_and_encode, jobs, self._encoder_factory
            )
        else:
            results = _mix_and_encode(jobs, self._encoder_factory)
        encoded = dict(zip(audible, results, strict=True))
        for key, members in groups.items():
            payload, pcm = encoded.get(key, (self._silence, None))
            for listener in members:
                # Members removed while the executor ran must not be fed again.
                if listener.id in self._listeners:
                    listener.track.push(payload, (tick - listener.first_tick) * FRAME_SAMPLES)
                    self._tell_taps(listener.id, pcm, due)
        self._expire_streams(set(audible))
        self.stats.ticks += 1
        self.stats.encoded_frames += len(jobs)
        self.stats.encode_streams = len(jobs)
        self.stats.listeners = len(self._listeners)

    def _pull(self) -> dict[str, SourceFrame]:
        frames: dict[str, SourceFrame] = {}
        for key, source in list(self._sources.items()):
            try:
                frame = source.pull()
            except Exception:
                log.exception("mix source %s failed; removing it", key)
                self._sources.pop(key, None)
                continue
            if frame is not None:
                frames[key] = frame
        return frames

    def _key(
        self, listener: Listener, frames: dict[str, SourceFrame], active: Sequence[SourceFrame]
    ) -> MixKey:
        key = []
        for source, frame in frames.items():
            gain = float(self.policy(listener, frame, active))
            if gain > 0.0:
                key.append((source, gain))
        return tuple(key)

    def _stream(self, key: MixKey) -> _EncodeStream:
        stream = self._streams.get(key)
        if stream is None:
            stream = self._streams[key] = _EncodeStream()
        stream.idle_ticks = 0
        return stream

    def _expire_streams(self, used: set[MixKey]) -> None:
        for key in [key for key in self._streams if key not in used]:
            stream = self._streams[key]
            stream.idle_ticks += 1
            if stream.idle_ticks > STREAM_IDLE_TICKS:
                del self._streams[key]

    def _may_sleep(self) -> bool:
        if not self._listeners:
            return True
        if self._quiet_ticks < QUIET_TICKS_BEFORE_SLEEP:
            return False
        return all(
            isinstance(source, WakingSource) and not source.pending
            for source in self._sources.values()
        )

    async def _sleep(self) -> None:
        self._awake.clear()
        self.sleeping = True
        self.stats.sleeps += 1
        try:
            await self._awake.wait()
        finally:
            self.sleeping = False

    async def _run(self) -> None:
        start = time.monotonic()
        first = self._next_tick
        while True:
            if self._may_sleep():
                await self._sleep()
                # The listeners' clocks ran on: their next packet's timestamp jumps over
                # the gap, to the next tick of the same grid, so that media time and the
                # server's clock (which echo references are placed by) stay one.
                waking = first + math.ceil((time.monotonic() - start) / TICK_SECONDS)
                self._next_tick = max(self._next_tick, waking)
            deadline = start + (self._next_tick - first) * TICK_SECONDS
            lateness = time.monotonic() - deadline
            if lateness < 0:
                await asyncio.sleep(-lateness)
            elif lateness >= MAX_CATCH_UP:
                missed = int(lateness // TICK_SECONDS)
                self._next_tick += missed
                deadline += missed * TICK_SECONDS
                self.stats.skipped_ticks += missed
                self.stats.late_ticks += 1
            elif lateness > TICK_SECONDS / 2:
                self.stats.late_ticks += 1
            try:
                await self.tick(deadline)
            except Exception:
                # One bad tick must not silence the room for good.
                log.exception("mixer tick failed")
