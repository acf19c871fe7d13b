"""The unit the room mixer works in: one 20 ms frame of 48 kHz mono audio."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

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


@runtime_checkable
class WakingSource(MixSource, Protocol):
    """A source that lets an idle room's mixer sleep: it says whether it still has audio
    coming without new input, and wakes the mixer when new input brings some."""

    @property
    def pending(self) -> bool:
        """Whether `pull` may return a frame before new input arrives."""
        ...

    def wake_with(self, wake: Callable[[], None]) -> None:
        """Call `wake` (on the event loop) whenever audio to mix arrives."""
        ...
