"""Echo of other phones' loudspeakers, taken out of a microphone before the VAD hears it.

The server knows what it sent to every phone. Correlating a microphone with what another
phone was sent (`media.correlation`) tells whether that loudspeaker is heard and how late
(network both ways, the phone's playout buffer, the air: 0 to 1 s); the `Evidence`
hysteresis of the grouping keeps the link steady. Every linked loudspeaker gets its own
canceller on that microphone, with the played audio lined up `LEAD` ahead of its echo.

CHOICE OF CANCELLER (bench/echo_cancellers.py on a simulated 6 x 4 x 3 m room, RT60 0.4 s,
a neighbour's loudspeaker 1.2 m away playing Spanish, then the owner talking over it):
see ECHO_FIGURES below; the reasons are in `media.echo_cancellers`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from media.automix import frame_db
from media.echo_cancellers import Canceller
from media.frames import Pcm
from media.grouping import Evidence
from media.resample import Decimator
from media.timeline import FRAME, RATE, Timeline

LEAD = RATE * 10 // 1000
"""The canceller's reference runs 10 ms ahead of its echo, so the filter is causal even
when the measured delay is a little long."""

PLAYED_ACTIVE_DBFS = -50.0
"""Played audio louder than this counts as the loudspeaker sounding."""

ECHO_DOMINATED_DB = 10.0
"""A frame that loses this much to the cancellers was mostly echo (for the metric)."""


class Loudspeaker:
    """What the server sent one phone, at 16 kHz on the server clock."""

    def __init__(self) -> None:
        self.played = Timeline()
        self._decimator = Decimator()
        self._next: int | None = None

    def play(self, start: int, pcm48k: Pcm | None) -> None:
        """One mixer tick (20 ms at 48 kHz, or None for silence) sent at `start`.

        Ticks are contiguous, so a tick lands where the previous one ended unless the
        clock says it is more than a frame off (the mixer skipped ticks, or stalled).
        """
        if self._next is not None and abs(start - self._next) <= FRAME:
            start = self._next
        samples = (np.zeros(FRAME * 3, np.float32) if pcm48k is None
                   else np.asarray(pcm48k, np.float32))
        decimated = self._decimator(samples)
        self.played.write(start, decimated)
        self._next = start + len(decimated)


@dataclass
class EchoPath:
    """One loudspeaker as heard by one microphone."""

    evidence: Evidence = field(default_factory=Evidence)
    canceller: Canceller | None = None

    @property
    def delay(self) -> int | None:
        """Samples from a sound's place in the played timeline to its echo in the mic's."""
        return self.evidence.lag if self.evidence.linked else None


class MicEcho:
    """The cancellers of one microphone, one per loudspeaker it hears."""

    def __init__(self, make_canceller: Callable[[], Canceller]) -> None:
        self.paths: dict[str, EchoPath] = {}
        self._make = make_canceller

    def path(self, speaker: str) -> EchoPath:
        return self.paths.setdefault(speaker, EchoPath())

    def forget(self, speaker: str) -> None:
        self.paths.pop(speaker, None)

    def clean(self, start: int, frame: Pcm, speakers: dict[str, Loudspeaker]) -> Pcm:
        """The frame at `start` with the echo of every linked loudspeaker taken out."""
        out = frame
        for speaker, path in self.paths.items():
            delay = path.delay
            loudspeaker = speakers.get(speaker)
            if delay is None or loudspeaker is None:
                path.canceller = None
                continue
            if path.canceller is None:
                path.canceller = self._make()
            reference = loudspeaker.played.read(start - delay + LEAD, FRAME)
            out = path.canceller.process(out, reference)
        return out


def echo_dominated(before: Pcm, after: Pcm) -> bool:
    return frame_db(before) - frame_db(after) >= ECHO_DOMINATED_DB
