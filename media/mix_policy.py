"""Who hears what, at which gain: the live rooms' mix policy and each listener's settings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from media.frames import SourceFrame

if TYPE_CHECKING:
    from media.mixer import Listener

DEFAULT_ORIGINAL = 0.18
"""The original voice's gain under a translation: -15 dB, loud enough to hear who speaks
and how, quiet enough that the translation is what you follow."""


@dataclass
class MixSettings:
    """One listener's mix preferences and circumstances."""

    original: float = DEFAULT_ORIGINAL
    """Gain of other-language original voices while a translation plays (`set_mix`)."""
    table: frozenset[str] = frozenset()
    """Participants co-located with this listener: heard through the air, so their
    original voice is never mixed in (their translations still are)."""


def translated_mix(listener: Listener, frame: SourceFrame, active: Sequence[SourceFrame]) -> float:
    """Gain of one frame in a listener's mix.

    Never yourself, not even your own translation. Never the original voice of someone at
    your table: you hear them in the air, and a replay would be a late echo. Same-language
    voices at full level. Translations into your language at full level. Voices in other
    languages at your `original` balance while a translation plays for you, and a little
    louder (its square root) while none does, so you hear someone start before their
    translation.
    """
    if frame.origin == listener.id:
        return 0.0
    if frame.kind == "translation":
        return 1.0 if frame.lang == listener.lang else 0.0
    if frame.origin in listener.mix.table:
        return 0.0
    if frame.lang == listener.lang:
        return 1.0
    original = listener.mix.original
    translating = any(
        f.kind == "translation" and f.lang == listener.lang and f.origin != listener.id
        for f in active
    )
    return original if translating else original**0.5
