"""How loud a loudspeaker's echo is at a microphone, and what that says about the rest of
what the microphone hears.

AEC3's residual suppressor judges, frame by frame, how much of what its linear filter
left is echo. On the live table (tests/test_colocated.py) it was traced wrong both ways:

- a canceller starting again on a loudspeaker may take only 3-8 dB out of that echo for
  a second or more. What it leaves is mostly the room's tail of the echo, which the
  one-lag likeness of `MicEcho._echo_left` does not recognise, and the VAD cut it into
  an utterance: a played translation translated again;
- a neighbour's loudspeaker starting over a talker made it take the talker down 30-40 dB
  for up to 0.8 s, and a microphone across the table, which hears the talker only as
  crosstalk, won those words.

Each loudspeaker's echo return (its echo's level at this microphone over the level it
played) is learned from frames the cancellers show to be that echo alone. Then the
microphone's level over the echo it should hear is near speech: a talker where the
suppressor saw echo, or nothing where the canceller left echo through.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import numpy as np

from media.automix import SILENT_DB, frame_levels
from media.frames import Pcm

ENVELOPE_FRAMES = 25
TAIL_DECAY_DB = 1.5
"""A loudspeaker's sound lingers in the room: the level its echo is compared with is the
loudest played frame of the last 0.5 s, each lowered by 1.5 dB per frame since (75 dB a
second, the decay of a room with an RT60 of 0.8 s; the simulated room's 0.4 s decays
twice as fast, so tails are not taken for near speech)."""

ECHO_ALONE_LOSS_DB = 20.0
"""A frame the cancellers took this much out of, while one loudspeaker sounded, was its
echo alone (a talker over it loses less: AEC3 keeps near speech once converged)."""

RETURN_FRAMES = 250
FEWEST_FRAMES = 50
"""The echo return is the median of the last 5 s of such frames, once there is 1 s."""

SMOOTH_FRAMES = 5
"""Levels compared below are powers over the last 100 ms: a single frame's echo strays
some 5 dB either way from what the reference predicts, a room's reflections coming and
going with the sounds played."""

NEAR_DB = 6.0
"""A microphone this far above the echo it should hear carries near speech."""

ECHO_ONLY_DB = 3.0
UNCANCELLED_DB = 10.0
"""A microphone less than `ECHO_ONLY_DB` above the echo it should hear may hear nothing
else. If the cancellers took less than `UNCANCELLED_DB` out of it, they let that echo
through. A talker as loud as the echo (a neighbour's loudspeaker louder at their phone
than they are) over a converged canceller is taken for that too; one 6 dB over the echo,
or 10 dB under it, is not."""


def echo_envelope(played: Pcm) -> float:
    """The source level of a frame's echo, from the played audio whose echo it may
    carry: `ENVELOPE_FRAMES` frames, the last one lined up with the microphone frame."""
    levels = frame_levels(played)
    since = TAIL_DECAY_DB * np.arange(len(levels) - 1, -1, -1)
    return float(np.max(levels - since))


class EchoReturn:
    """One loudspeaker's echo return at one microphone, in dB (negative: quieter)."""

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=RETURN_FRAMES)
        self._db: float | None = None

    def learn(self, mic_db: float, envelope_db: float) -> None:
        """One frame that was this loudspeaker's echo alone."""
        self._samples.append(mic_db - envelope_db)
        if len(self._samples) >= FEWEST_FRAMES:
            self._db = float(np.median(self._samples))

    @property
    def db(self) -> float | None:
        return self._db


class NearSpeech:
    """One microphone's recent levels: what it heard, the echo expected in it, what the
    cancellers left."""

    def __init__(self) -> None:
        self._heard: deque[float] = deque(maxlen=SMOOTH_FRAMES)
        self._echo: deque[float] = deque(maxlen=SMOOTH_FRAMES)
        self._left: deque[float] = deque(maxlen=SMOOTH_FRAMES)
        self.level_db: float | None = None
        """Near speech of the last 100 ms where it stands `NEAR_DB` over the expected
        echo; None where it does not, or where an echo return is still unknown."""
        self.echo_left = False
        """Whether the cancellers let through echo in the last 100 ms."""

    def update(self, heard_db: float, expected_echo_db: float | None, left_db: float) -> None:
        """One frame: heard at `heard_db`, `left_db` after the cancellers."""
        if expected_echo_db is None:
            self.reset()
            return
        self._heard.append(_from_db(heard_db))
        self._echo.append(_from_db(expected_echo_db))
        self._left.append(_from_db(left_db))
        count = len(self._heard)
        heard, echo = sum(self._heard) / count, sum(self._echo) / count
        left = sum(self._left) / count
        self.level_db = _db(heard - echo) if heard >= _from_db(NEAR_DB) * echo else None
        self.echo_left = (heard < _from_db(ECHO_ONLY_DB) * echo
                          and left * _from_db(UNCANCELLED_DB) > heard)

    def reset(self) -> None:
        self._heard.clear()
        self._echo.clear()
        self._left.clear()
        self.level_db = None
        self.echo_left = False


def sum_db(levels: Iterable[float]) -> float:
    """The level of sounds at `levels` (dB) heard together."""
    return _db(sum(_from_db(db) for db in levels))


def _from_db(db: float) -> float:
    return 10.0 ** (db / 10.0)


def _db(power: float) -> float:
    return 10.0 * math.log10(power) if power > 1e-10 else SILENT_DB
