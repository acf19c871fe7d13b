"""Gain sharing between co-located microphones: the microphone nearest a talker keeps the
talker, the others, which hear the same sound only as crosstalk, are gated.

The idea is Dugan's automatic mixer (each open microphone's share of the gain follows its
share of the total level), taken to its limit: a share well under the leader's is gated
outright, because even a 20 dB quieter copy of a sentence would still be cut into an
utterance of its own by the VAD. Levels are compared on streams lined up by the lag the
grouping measured, 20 ms at a time.

Each level is an envelope that rises at once and falls `DECAY_DB` a frame, slower than the
room's reverberation dies away, so the leader stays ahead through the reverberant tail of
each word, which reaches every microphone at about the same level. Two talkers at once at
opposite ends each lead at their own microphone, so both are kept. A gated microphone stays
gated for `HOLD_FRAMES` unless it becomes the loudest, so a word's reverberant tail cannot
slip through as a string of short fragments.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from media.frames import Pcm
from media.timeline import FRAME

MARGIN_DB = 3.0
"""A microphone this far below the aligned leader hears the leader's talker as crosstalk."""

ACTIVE_DB = 12.0
"""A leader must be this far above its own noise floor to gate anyone."""

DECAY_DB = 1.5
"""Envelope fall per 20 ms frame (about 75 dB a second; an RT60 of 0.4 s falls 150)."""

RING_FRAMES = 500
"""Envelopes kept: 10 s, more than any lag a peer is looked up at."""
HOLD_FRAMES = 10
FLOOR_FRAMES = 150
"""The noise floor is the quietest frame of the last 3 s."""

SILENT_DB = -100.0


def frame_db(samples: Pcm) -> float:
    power = float(np.dot(samples, samples)) / max(len(samples), 1)
    return 10.0 * math.log10(power) if power > 1e-10 else SILENT_DB


def frame_levels(samples: Pcm) -> np.ndarray:
    """The level (dB) of each whole 20 ms frame of `samples`."""
    frames = samples[: len(samples) // FRAME * FRAME].reshape(-1, FRAME)
    power = np.einsum("ij,ij->i", frames, frames) / FRAME
    return 10.0 * np.log10(np.maximum(power, 1e-10))


@dataclass
class MicLevel:
    """One microphone's frame levels and envelope on its own 20 ms grid, newest last."""

    recent_db: deque[float] = field(default_factory=lambda: deque(maxlen=FLOOR_FRAMES))
    hold: int = 0
    origin: int | None = None
    """Timeline position of frame 0 of the grid."""
    count: int = 0
    """Frames pushed so far."""
    _env: np.ndarray = field(default_factory=lambda: np.full(RING_FRAMES, SILENT_DB))

    @property
    def floor_db(self) -> float:
        return min(self.recent_db) if self.recent_db else SILENT_DB

    @property
    def end(self) -> int | None:
        """Timeline position one past the newest frame pushed."""
        return None if self.origin is None else self.origin + self.count * FRAME

    def push(self, start: int, db: float) -> None:
        """The next frame's level (dB). Frames come in order, one step apart; after a jump
        (a stream restarted) the grid moves so that this frame is its newest."""
        if self.origin is None or start != self.end:
            self.origin = start - self.count * FRAME
        self.recent_db.append(db)
        previous = self._env[(self.count - 1) % RING_FRAMES] if self.count else SILENT_DB
        self._env[self.count % RING_FRAMES] = max(db, previous - DECAY_DB)
        self.count += 1

    def envelope(self, start: int) -> float:
        """The loudest envelope of the frames overlapping `start` ± half a frame."""
        if self.origin is None:
            return SILENT_DB
        first = (start - FRAME // 2 - self.origin) // FRAME
        last = (start + FRAME + FRAME // 2 - 1 - self.origin) // FRAME
        first, last = max(first, self.count - RING_FRAMES, 0), min(last, self.count - 1)
        if last < first:
            return SILENT_DB
        return float(max(self._env[k % RING_FRAMES] for k in range(first, last + 1)))

    def envelope_of(self, start: int) -> float:
        """The envelope of this microphone's own frame at `start`."""
        if self.origin is None:
            return SILENT_DB
        k = (start - self.origin) // FRAME
        if not max(self.count - RING_FRAMES, 0) <= k < self.count:
            return SILENT_DB
        return float(self._env[k % RING_FRAMES])


@dataclass(frozen=True, slots=True)
class Peer:
    level: MicLevel
    lag: int
    """Samples after this microphone at which the peer hears the same sound."""


class AutoMixer:
    """Decides, frame by frame, whether a grouped microphone keeps its audio."""

    def __init__(self) -> None:
        self.levels: dict[str, MicLevel] = {}

    def level(self, pid: str) -> MicLevel:
        return self.levels.setdefault(pid, MicLevel())

    def remove(self, pid: str) -> None:
        self.levels.pop(pid, None)

    def gate(self, pid: str, start: int, own_db: float, peers: list[Peer]) -> float:
        """The gain for `pid`'s frame at `start` (already pushed to its level, at
        `own_db`): 1 to keep it, less to bring crosstalk down to the noise floor."""
        level = self.level(pid)
        own_env = level.envelope_of(start)
        leaders = []
        for peer in peers:
            lead = peer.level.envelope(start + peer.lag)
            if lead >= peer.level.floor_db + ACTIVE_DB:
                leaders.append(lead)
        crosstalk = any(lead - own_env >= MARGIN_DB for lead in leaders)
        if crosstalk:
            level.hold = HOLD_FRAMES
        elif level.hold > 0:
            if leaders and own_env < max(leaders):
                level.hold -= 1
                crosstalk = True
            else:
                level.hold = 0
        if not crosstalk:
            return 1.0
        return min(1.0, 10 ** ((level.floor_db - own_db) / 20))
