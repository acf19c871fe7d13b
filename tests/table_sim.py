"""Runs simulated rooms through `AcousticTables` and the project's VAD, 20 ms at a time,
with the delays of a real call: what the server sends a phone plays out of its
loudspeaker after the downlink and the phone's playout buffer; what its microphone hears
reaches the server after the uplink and jitter buffer. Deterministic: the clock is the
tick count, not the wall (process time is only measured, for the bench).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy.signal import resample_poly

from ai.utterance import Utterance
from ai.vad import VadSegmenter
from media.inbound import Chunk16k
from media.table import AcousticTables
from tests.acoustic_room import BLOCK, RATE, AcousticRoom, RoomStream, Signal

TICK = BLOCK / RATE
START = 1000.0
"""The server's monotonic clock at tick 0."""


@dataclass
class Link:
    """One phone's connection, in 20 ms ticks."""

    uplink: int = 3
    """Microphone capture to the server's decoder (network and jitter buffer)."""
    playout: int = 6
    """Server send to loudspeaker (network and the phone's playout buffer)."""
    stream_offset: float = 0.0
    """The phone's RTP clock at tick 0, in seconds."""


@dataclass
class Heard:
    """One VAD utterance: whose microphone, and when it was spoken in tick seconds."""

    pid: str
    start: float
    end: float
    utterance: Utterance


@dataclass
class TableSim:
    rooms: list[AcousticRoom]
    links: dict[str, Link] = field(default_factory=dict)
    tables: AcousticTables = field(default_factory=AcousticTables)
    heard: list[Heard] = field(default_factory=list)
    tick: int = 0
    on_tick: Callable[[int], None] | None = None
    dsp_seconds: float = 0.0
    """CPU time spent inside `AcousticTables` (process time)."""

    def __post_init__(self) -> None:
        self._streams: list[RoomStream] = [room.stream() for room in self.rooms]
        self._room_of = {p: i for i, room in enumerate(self.rooms) for p in room.phones}
        self._vads: dict[str, VadSegmenter] = {}
        self._speaker_lines: dict[str, deque[Signal]] = {}
        self._uplinks: dict[str, deque[Chunk16k | None]] = {}
        for pid in self._room_of:
            link = self.links.setdefault(pid, Link())
            self.tables.add(pid)
            self._vads[pid] = VadSegmenter(source_id=pid)
            self._speaker_lines[pid] = deque([np.zeros(BLOCK, np.float32)] * link.playout)
            self._uplinks[pid] = deque([None] * link.uplink)

    @property
    def phones(self) -> list[str]:
        return list(self._room_of)

    def stream(self, phone: str) -> RoomStream:
        return self._streams[self._room_of[phone]]

    def run(
        self, talkers: Mapping[str, Signal], played: Mapping[str, Signal] | None = None,
        seconds: float | None = None,
    ) -> None:
        """Play whole 16 kHz signals: `talkers` by talker name (in whichever room has
        them), `played` by phone (what the server sends it). Runs until all have ended
        plus a second, or for `seconds`."""
        played = played or {}
        longest = max([len(s) for s in (*talkers.values(), *played.values())], default=0)
        ticks = round(seconds / TICK) if seconds is not None else -(-longest // BLOCK) + 50
        sent48k = {pid: resample_poly(s, 3, 1).astype(np.float32) for pid, s in played.items()}
        for n in range(ticks):
            window = slice(n * BLOCK, (n + 1) * BLOCK)
            self.step(
                {name: _part(s, window) for name, s in talkers.items()},
                {pid: _part(s, slice(n * BLOCK * 3, (n + 1) * BLOCK * 3), BLOCK * 3)
                 for pid, s in sent48k.items()},
            )

    def step(self, talkers: Mapping[str, Signal], sent48k: Mapping[str, Signal]) -> None:
        now = START + self.tick * TICK
        for pid in self._room_of:
            pcm = sent48k.get(pid)
            audible = pcm is not None and bool(np.any(pcm))
            began = time.process_time()
            self.tables.played(pid, pcm if audible else None, at=now)
            self.dsp_seconds += time.process_time() - began
            line = self._speaker_lines[pid]
            line.append(np.zeros(BLOCK, np.float32) if pcm is None
                        else resample_poly(pcm, 1, 3).astype(np.float32))
        for r, stream in enumerate(self._streams):
            room = self.rooms[r]
            mics = stream.block(
                {n: s for n, s in talkers.items() if n in room.talkers},
                {p: self._speaker_lines[p].popleft() for p in room.phones},
            )
            for pid, samples in mics.items():
                link = self.links[pid]
                chunk = Chunk16k(samples, link.stream_offset + self.tick * TICK, 0.0)
                self._uplinks[pid].append(chunk)
        for pid in self._room_of:
            captured = self._uplinks[pid].popleft()
            if captured is None:
                continue
            arrived = Chunk16k(captured.samples, captured.time, now)
            began = time.process_time()
            cleaned = self.tables.mic(pid, arrived)
            self.dsp_seconds += time.process_time() - began
            for chunk in cleaned:
                self._hear(pid, chunk)
        if self.on_tick is not None:
            self.on_tick(self.tick)
        self.tick += 1

    def finish(self) -> None:
        for pid, vad in self._vads.items():
            for utterance in vad.flush():
                self._record(pid, utterance)

    def _hear(self, pid: str, chunk: Chunk16k) -> None:
        for utterance in self._vads[pid].push(chunk.samples, chunk.time, chunk.received):
            self._record(pid, utterance)

    def _record(self, pid: str, utterance: Utterance) -> None:
        offset = self.links[pid].stream_offset
        self.heard.append(Heard(pid, utterance.start - offset, utterance.end - offset, utterance))

    def heard_between(self, start: float, end: float) -> list[Heard]:
        """Utterances that overlap [start, end) in tick seconds."""
        return [h for h in self.heard if h.start < end and h.end > start]


def _part(signal: Signal, window: slice, size: int = BLOCK) -> Signal:
    part = np.asarray(signal[window], np.float32)
    if len(part) < size:
        part = np.concatenate([part, np.zeros(size - len(part), np.float32)])
    return part
