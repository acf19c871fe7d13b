"""The small interfaces each engine sits behind, so tests and benches can swap them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from ai import vad
from ai.languages import LANGUAGES
from ai.utterance import Audio, Utterance


@dataclass(slots=True)
class SpeechResult:
    """What the translator makes of one utterance's audio."""

    transcript: str
    source_lang: str
    translations: dict[str, str] = field(default_factory=dict)


class SpeakerEmbedder(Protocol):
    """Turns 16 kHz mono speech into a fixed-size voiceprint."""

    dimension: int

    def embed(self, audio: Audio) -> npt.NDArray[np.float32]: ...


class Translator(Protocol):
    """SeamlessM4T v2, or anything that can stand in for it.

    Every method is async and may be called from many rooms at once; batches
    are the unit of work so that callers can be served together.
    """

    async def translate_speech(
        self,
        batch: Sequence[tuple[Audio, str | None, Sequence[str]]],
        *,
        priors: Sequence[str | None] = (),
        text_later: bool = False,
    ) -> list[SpeechResult]:
        """Each item: (16 kHz audio, pinned source language or None, target languages).

        A source of None is detected among the languages the engine hears; `priors`
        (empty, or one per item) names the language each speaker declared, which
        detection favours. With `text_later`, an engine that writes some targets from
        the transcript with a separate text model may leave them out of `translations`:
        the caller asks `translate_text` for them, and what is written from the speech
        reaches its listeners without waiting for the text model.
        """
        ...

    async def translate_text(
        self, texts: Sequence[str], source_lang: str, target_lang: str
    ) -> list[str]: ...

    async def speak(self, text: str, lang: str) -> tuple[Audio, int]:
        """Speech output through the model's own vocoder: (samples, sample rate)."""
        ...


class SpeechSynthesizer(Protocol):
    """Text to speech, streamed sentence by sentence."""

    def speaks(self, lang: str) -> bool: ...

    def stream(self, text: str, lang: str, voice: str) -> AsyncIterator[Audio]:
        """Yields 48 kHz mono chunks, the first before the whole text is synthesized."""
        ...


@dataclass(slots=True)
class Engines:
    """One loaded copy of each engine, shared by every room and by the REST face."""

    translator: Translator
    synthesizer: SpeechSynthesizer
    segment: Callable[[Audio], list[Utterance]] = vad.segment
    """Cuts a whole 16 kHz recording into utterances."""
    written: frozenset[str] = frozenset(c for c, lang in LANGUAGES.items() if lang.text_out)
    """Languages the translator writes: pass the loaded model's own set."""
    heard: frozenset[str] = frozenset(c for c, lang in LANGUAGES.items() if lang.speech_in)
    """Languages the translator hears: pass the loaded model's own set."""
    seamless_spoken: frozenset[str] = frozenset(
        c for c, lang in LANGUAGES.items() if lang.seamless_speech_out
    )
    """Languages the translator's own vocoder speaks: pass the loaded model's own set."""

    def speech_out(self, lang: str) -> Literal["kokoro", "seamless"] | None:
        if self.synthesizer.speaks(lang):
            return "kokoro"
        return "seamless" if lang in self.seamless_spoken else None

    def languages(self) -> list[dict[str, Any]]:
        """What `/languages` lists, from what the loaded engines can do, sorted by name."""
        found = [
            {
                "code": code,
                "name": lang.name,
                "speech_in": code in self.heard,
                "text_out": code in self.written,
                "speech_out": self.speech_out(code) if code in self.written else None,
            }
            for code, lang in LANGUAGES.items()
        ]
        return sorted(found, key=lambda info: info["name"])
