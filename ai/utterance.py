"""The one object that travels the pipeline: an utterance and all we learn of it."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

PIPELINE_RATE = 16_000
"""Sample rate of the audio every engine takes in."""

Audio = npt.NDArray[np.float32]
"""Mono float32 samples in [-1, 1]."""

_ids = itertools.count(1)


def next_utterance_id() -> str:
    return f"u{next(_ids)}"


@dataclass(slots=True)
class Utterance:
    """One stretch of speech from one connection.

    `audio` is 16 kHz mono float32. `start`/`end` are seconds on the
    connection's own stream clock. `stamps` holds `time.monotonic()` values per
    pipeline stage (names in `Stage`), so latency can be measured end to end.
    """

    audio: Audio
    start: float
    end: float
    source_id: str = ""
    """The connection (participant) the audio came from."""
    room: str = ""
    id: str = field(default_factory=next_utterance_id)
    speaker_id: str | None = None
    speaker_name: str | None = None
    source_lang: str | None = None
    """Pinned by the speaker (never detected then), or detected by the translator."""
    declared_lang: str | None = None
    """The language the speaker is taken to speak (last detected, else the one they
    listen in): detection favours it."""
    transcript: str | None = None
    translations: dict[str, str] = field(default_factory=dict)
    speech: dict[str, Audio] = field(default_factory=dict)
    """Synthesized translation per target language, at `SPEECH_RATE`."""
    stamps: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def duration(self) -> float:
        return len(self.audio) / PIPELINE_RATE

    def stamp(self, stage: str, at: float | None = None) -> None:
        self.stamps[stage] = time.monotonic() if at is None else at


class Stage:
    """Names of the timestamps an utterance carries."""

    LAST_VOICED = "last_voiced"
    VAD_END = "vad_end"
    VOICEPRINT = "voiceprint"
    TRANSLATED = "translated"
    FIRST_TTS = "first_tts"
    FIRST_SENT = "first_sent"
