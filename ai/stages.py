"""The pipeline's blocks: small callables that each take an utterance one step further.

Each block works on the shared `Utterance`, stamps the `Stage` it completes,
and holds no per-room state, so one instance of each serves every room. The
engines behind them run off the event loop already; the blocks only bound how
many calls may be in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import numpy as np

from ai.batcher import MicroBatcher
from ai.engines import SpeechResult, SpeechSynthesizer, Translator
from ai.languages import LANGUAGES
from ai.resample import SPEECH_RATE, to_speech_rate
from ai.utterance import Audio, Stage, Utterance

log = logging.getLogger(__name__)

SpeechRequest = tuple[Audio, str | None, Sequence[str], str | None]
"""(16 kHz audio, pinned language, targets, declared language): one item of
`Translator.translate_speech` and its prior."""

SEAMLESS_SPOKEN = frozenset(code for code, lang in LANGUAGES.items() if lang.seamless_speech_out)
"""What SeamlessM4T v2's vocoder speaks; a loaded model may know fewer."""

VoiceCaster = Callable[[str, str, Audio], Awaitable[str]]
"""(speaker id, language, the speaker's 16 kHz audio) -> the synthesizer voice to use."""


class SpeakerIdentifier(Protocol):
    """Who spoke: a room's voiceprint registry behind an embedder."""

    async def identify(self, utterance: Utterance) -> tuple[str, str | None]:
        """(speaker id, display name if known)."""
        ...


class IdentifySpeaker:
    """Fills `speaker_id`/`speaker_name`; stamps `Stage.VOICEPRINT`.

    A failure costs only the speaker label (the translation goes on, voiced as
    the connection it came from), so it is logged, not raised.
    Concurrency: at most `slots` identifications at once across every room;
    the rest wait in FIFO order. Their number is bounded by the pipelines'
    in-flight bound.
    """

    def __init__(self, slots: int = 2) -> None:
        self._slots = asyncio.Semaphore(slots)

    async def __call__(self, utterance: Utterance, identifier: SpeakerIdentifier) -> None:
        try:
            async with self._slots:
                utterance.speaker_id, utterance.speaker_name = await identifier.identify(utterance)
        except Exception:
            log.warning("voiceprint failed for %s; speaker unknown", utterance.id, exc_info=True)
        utterance.stamp(Stage.VOICEPRINT)


class TranslateSpeech:
    """Transcribes and translates through the shared micro-batcher; stamps `Stage.TRANSLATED`.

    Targets a translator writes from the transcript with a separate text model may be
    missing afterwards (`text_later`): `TranslateText` writes them. Raises what the
    translator raised for this utterance alone, or `BatcherFull` when the translator's
    queue is at its bound.
    """

    def __init__(
        self,
        translator: Translator,
        *,
        window: float = 0.020,
        max_batch: int = 8,
        max_pending: int = 64,
    ) -> None:
        async def translate(batch: list[SpeechRequest]) -> list[SpeechResult]:
            return await translator.translate_speech(
                [(audio, pinned, targets) for audio, pinned, targets, _ in batch],
                priors=[prior for *_, prior in batch],
                text_later=True,
            )

        self.batcher: MicroBatcher[SpeechRequest, SpeechResult] = MicroBatcher(
            translate,
            window=window,
            max_batch=max_batch,
            max_pending=max_pending,
        )

    async def __call__(self, utterance: Utterance, targets: Sequence[str]) -> None:
        pinned = utterance.source_lang
        result = await self.batcher.submit(
            (utterance.audio, pinned, tuple(targets), utterance.declared_lang)
        )
        utterance.transcript = result.transcript
        utterance.source_lang = result.source_lang or pinned or utterance.declared_lang
        utterance.translations = dict(result.translations)
        utterance.stamp(Stage.TRANSLATED)

    async def close(self) -> None:
        await self.batcher.close()


class TranslateText:
    """Writes one target from the utterance's transcript, for what `TranslateSpeech` left
    out. Queue bound: the translator's own (a busy one raises)."""

    def __init__(self, translator: Translator) -> None:
        self.translator = translator

    async def __call__(self, utterance: Utterance, lang: str) -> None:
        source, transcript = utterance.source_lang, utterance.transcript
        if source is None or not transcript:
            utterance.translations[lang] = ""  # nothing heard: nothing to say
            return
        (text,) = await self.translator.translate_text([transcript], source, lang)
        utterance.translations[lang] = text


class SpeakTranslation:
    """Streams one translation as 48 kHz speech; stamps `Stage.FIRST_TTS` at the first chunk.

    Kokoro speaks where it can, in a voice cast for the speaker; SeamlessM4T's
    own vocoder speaks the languages Kokoro lacks; other languages get
    captions only (no chunk at all).
    Concurrency: at most `slots` syntheses at once across every room; the rest
    wait in FIFO order, so translations are voiced in the order they were
    ready. Their number is bounded by the pipelines' in-flight bound. Several
    slots let the synthesizer see every waiting first piece, and order them
    with the later pieces of translations being heard by when each is due.
    """

    def __init__(
        self,
        synthesizer: SpeechSynthesizer,
        translator: Translator,
        *,
        slots: int = 8,
        seamless_spoken: Collection[str] = SEAMLESS_SPOKEN,
    ) -> None:
        self._synthesizer = synthesizer
        self._translator = translator
        self._slots = asyncio.Semaphore(slots)
        self._waiting = 0
        self._seamless_spoken = frozenset(seamless_spoken)

    @property
    def waiting(self) -> int:
        """Syntheses waiting for a slot, the rooms' and the REST face's together."""
        return self._waiting

    def speaks(self, lang: str) -> bool:
        return self._synthesizer.speaks(lang) or lang in self._seamless_spoken

    async def __call__(
        self,
        utterance: Utterance,
        lang: str,
        text: str,
        cast_voice: VoiceCaster,
        emit: Callable[[Audio], None],
    ) -> None:
        if not text.strip() or not self.speaks(lang):
            return
        async with self._slot():
            if self._synthesizer.speaks(lang):
                speaker = utterance.speaker_id or utterance.source_id
                voice = await cast_voice(speaker, lang, utterance.audio)
                async for chunk in self._stream(text, lang, voice):
                    self._emit(utterance, chunk, emit)
            else:
                audio, rate = await self._translator.speak(text, lang)
                # Tens of milliseconds for a long sentence: too long for the loop's 20 ms ticks.
                loop = asyncio.get_running_loop()
                chunk = await loop.run_in_executor(None, to_speech_rate, audio, rate)
                self._emit(utterance, chunk, emit)

    async def synthesize(self, text: str, lang: str, voice: str | None) -> tuple[Audio, int]:
        """The whole text as speech, (samples, rate), in one of the rooms' slots.

        For callers outside a room (the REST face): sharing the slots bounds the
        synthesizer's load and keeps rooms' sentences in the same FIFO order as theirs.
        Kokoro needs a `voice` and raises `ValueError` for one it lacks; the translator's
        own vocoder has one voice per language and ignores it.
        """
        async with self._slot():
            if self._synthesizer.speaks(lang):
                if voice is None:
                    raise ValueError(f"name a Kokoro voice for {lang!r}")
                chunks = [chunk async for chunk in self._stream(text, lang, voice)]
                audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
                return audio, SPEECH_RATE
            return await self._translator.speak(text, lang)

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()

    async def _stream(self, text: str, lang: str, voice: str) -> AsyncIterator[Audio]:
        chunks = self._synthesizer.stream(text, lang, voice)
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()  # stops a cancelled stream's remaining sentences

    @staticmethod
    def _emit(utterance: Utterance, chunk: Audio, emit: Callable[[Audio], None]) -> None:
        if chunk.size == 0:
            return
        if Stage.FIRST_TTS not in utterance.stamps:
            utterance.stamp(Stage.FIRST_TTS)
        emit(chunk)
