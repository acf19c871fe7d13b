"""The unit the room mixer works in: one 20 ms frame of 48 kHz mono audio."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

MIX_RATE = 48_000
FRAME_MS = 20
FRAME_SAMPLES = MIX_RATE * FRAME_MS // 1000

Pcm = npt.NDArray[np.float32]
"""Mono float32 samples in [-1, 1]."""

SourceKind = Literal["voice", "translation"]


@dataclass(frozen=True, slots=True)
class SourceFrame:
    """One tick of one source, tagged with whose speech it carries.

    `origin` is the participant id whose speech this is, so a listener's mix can
    leave out their own voice and their own translations. `lang` is the
    language the audio is in.
    """

    pcm: Pcm
    origin: str
    kind: SourceKind
    lang: str


class MixSource(Protocol):
    """Anything the room mixer pulls one frame from per 20 ms tick."""

    def pull(self) -> SourceFrame | None:
        """The next frame, or None when the source is silent this tick. Never blocks."""
        ...
