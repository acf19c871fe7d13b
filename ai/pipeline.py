"""A room's translation pipeline: each utterance from the VAD to captions and speech.

Per utterance, at VAD end: the room's current listening languages, less the
speaker's own, become its targets; the speaker is identified by voiceprint
while the translator transcribes and translates (the voiceprint only picks the
voice and the caption's name, so it stays off the critical path); then every
target language is spoken at once. What comes out goes to a `PipelineSink`,
which the room wires to captions and to per-language playouts, so `ai/`
never touches media or signaling.

The models behind the blocks are shared by every room (`PipelineEngines`);
a `RoomPipeline` holds only one room's in-flight utterances.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Protocol

from ai.engines import SpeechSynthesizer, Translator
from ai.stages import (
    SEAMLESS_SPOKEN,
    IdentifySpeaker,
    SpeakerIdentifier,
    SpeakTranslation,
    TranslateSpeech,
    TranslateText,
    VoiceCaster,
)
from ai.utterance import Audio, Stage, Utterance

log = logging.getLogger(__name__)


class PipelineSink(Protocol):
    """Where a room's pipeline reports. Called on the event loop; must return at once.

    For each utterance, in this order: `on_dispatch` (unless refused), captions,
    speech per target language, then `on_finished`. Each target language of
    `on_dispatch` ends with exactly one `on_speech_end` or `on_error` for that
    language, or all of them with one `on_error(lang=None)` or `on_discarded`. An
    utterance whose source is cancelled gets no further event: drop its source's
    playout reservations then.
    """

    def on_dispatch(self, utterance: Utterance, targets: Sequence[str], order_key: float) -> None:
        """Translation into `targets` begins: reserve each language's playout slot now."""

    def on_caption(self, utterance: Utterance, lang: str, text: str, final: bool) -> None:
        """The source transcript (final=False, then True) and each translation (final=True)."""

    def on_speech(self, utterance: Utterance, lang: str, chunk: Audio) -> None:
        """48 kHz mono speech of the translation into `lang`, in order."""

    def on_speech_end(self, utterance: Utterance, lang: str) -> None:
        """No more speech into `lang` (possibly none at all: a captions-only language)."""

    def on_error(self, utterance: Utterance, message: str, lang: str | None) -> None:
        """`lang` failed, or the whole utterance when None; `message` says why."""

    def on_discarded(self, utterance: Utterance) -> None:
        """Translated, but no one's speech (`RoomPipeline`'s `heard_back`): release its
        reservations; no caption or speech of it follows, only `on_finished`."""

    def on_finished(self, utterance: Utterance) -> None:
        """Done with this utterance, failed or not; its stamps are complete."""


def order_key(utterance: Utterance) -> float:
    """When the utterance ended: translations into one language play in this order."""
    return utterance.stamps[Stage.VAD_END]


class PipelineEngines:
    """The blocks every room shares, around one copy of each model."""

    def __init__(
        self,
        translator: Translator,
        synthesizer: SpeechSynthesizer,
        *,
        batch_window: float = 0.020,
        max_batch: int = 8,
        max_pending: int = 64,
        voiceprint_slots: int = 2,
        speech_slots: int = 8,
        seamless_spoken: Collection[str] = SEAMLESS_SPOKEN,
    ) -> None:
        self.identify = IdentifySpeaker(voiceprint_slots)
        self.translate = TranslateSpeech(
            translator, window=batch_window, max_batch=max_batch, max_pending=max_pending
        )
        self.translate_text = TranslateText(translator)
        self.speak = SpeakTranslation(
            synthesizer, translator, slots=speech_slots, seamless_spoken=seamless_spoken
        )

    async def close(self) -> None:
        await self.translate.close()


class RoomPipeline:
    """One room's utterances in flight, each in its own task.

    Bound: a source (participant) has at most `max_in_flight_per_source`
    utterances in flight. One more is refused at `submit` with an `on_error`
    (a caption marker) rather than queued: a speaker that far ahead of the
    translator would otherwise make every later translation later still.
    """

    def __init__(
        self,
        engines: PipelineEngines,
        identifier: SpeakerIdentifier,
        listening_langs: Callable[[], Iterable[str]],
        cast_voice: VoiceCaster,
        sink: PipelineSink,
        *,
        max_in_flight_per_source: int = 4,
        heard_back: Callable[[Utterance], bool] = lambda _: False,
    ) -> None:
        self._engines = engines
        self._heard_back = heard_back
        """Whether a transcribed utterance is audio this room played, heard back by a
        microphone: it is then discarded, never translated again."""
        self._identifier = identifier
        self._listening_langs = listening_langs
        self._cast_voice = cast_voice
        self._sink = sink
        self._max_in_flight = max_in_flight_per_source
        self._in_flight: dict[str, tuple[Utterance, asyncio.Task[None]]] = {}
        self._closed = False

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def targets(self, utterance: Utterance) -> list[str]:
        """Languages someone in the room hears now, other than the one spoken when it is
        pinned; with the spoken language still to detect, every one of them."""
        return sorted(set(self._listening_langs()) - {utterance.source_lang})

    def submit(self, utterance: Utterance) -> bool:
        """Starts an utterance; False if refused (its `on_error` and `on_finished` already sent).

        Stamps `Stage.VAD_END` now if the VAD did not.
        """
        if self._closed:
            raise RuntimeError("pipeline is closed")
        if utterance.id in self._in_flight:
            raise ValueError(f"utterance {utterance.id} is already in flight")
        busy = sum(1 for utt, _ in self._in_flight.values() if utt.source_id == utterance.source_id)
        if busy >= self._max_in_flight:
            self._fail(utterance, f"{busy} utterances still being translated; this one skipped")
            self._sink.on_finished(utterance)
            return False
        if Stage.VAD_END not in utterance.stamps:
            utterance.stamp(Stage.VAD_END)
        task = asyncio.create_task(self._run(utterance), name=f"pipeline {utterance.id}")
        self._in_flight[utterance.id] = (utterance, task)
        task.add_done_callback(lambda _: self._in_flight.pop(utterance.id, None))
        return True

    async def cancel_source(self, source_id: str) -> None:
        """Drops everything in flight from a participant who left; returns once it is gone."""
        await self._cancel([task for utt, task in self._in_flight.values()
                            if utt.source_id == source_id])

    async def close(self) -> None:
        self._closed = True
        await self._cancel([task for _, task in self._in_flight.values()])

    async def _cancel(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, utterance: Utterance) -> None:
        try:
            await self._process(utterance)
        except Exception as error:  # a bug in a block or the sink: this utterance fails alone
            log.exception("pipeline failed on utterance %s", utterance.id)
            self._fail(utterance, f"internal error: {error}")
        self._in_flight.pop(utterance.id, None)  # the done callback covers cancellation
        self._sink.on_finished(utterance)

    async def _process(self, utterance: Utterance) -> None:
        targets = self.targets(utterance)
        self._sink.on_dispatch(utterance, targets, order_key(utterance))
        identifying = asyncio.create_task(self._engines.identify(utterance, self._identifier))
        try:
            await self._engines.translate(utterance, targets)
            await identifying
        except Exception as error:
            log.warning("translation failed on utterance %s: %s", utterance.id, error)
            self._fail(utterance, f"translation failed: {error}")
            return
        finally:
            if not identifying.done():  # translation failed or was cancelled
                identifying.cancel()
                await asyncio.gather(identifying, return_exceptions=True)
        if self._heard_back(utterance):
            self._sink.on_discarded(utterance)
            return
        later = [
            lang for lang in targets
            if lang != utterance.source_lang and lang not in utterance.translations
        ]
        now = [lang for lang in targets if lang not in later]
        self._caption(utterance, now)
        await asyncio.gather(
            *(self._speak(utterance, lang) for lang in now),
            *(self._translate_then_speak(utterance, lang) for lang in later),
        )

    def _caption(self, utterance: Utterance, targets: Sequence[str]) -> None:
        source, transcript = utterance.source_lang or "", utterance.transcript or ""
        if transcript:
            self._sink.on_caption(utterance, source, transcript, False)
        for lang in targets:
            self._caption_in(utterance, lang)
        if transcript and source not in targets:
            self._sink.on_caption(utterance, source, transcript, True)

    def _caption_in(self, utterance: Utterance, lang: str) -> None:
        text = (utterance.transcript if lang == utterance.source_lang
                else utterance.translations.get(lang))
        if text:
            self._sink.on_caption(utterance, lang, text, True)

    async def _translate_then_speak(self, utterance: Utterance, lang: str) -> None:
        """A target the text model writes from the transcript, after the others went out."""
        try:
            await self._engines.translate_text(utterance, lang)
        except Exception as error:
            log.warning("translation into %s failed on utterance %s: %s", lang, utterance.id,
                        error)
            self._fail(utterance, f"translation into {lang} failed: {error}", lang)
            return
        self._caption_in(utterance, lang)
        await self._speak(utterance, lang)

    async def _speak(self, utterance: Utterance, lang: str) -> None:
        if lang == utterance.source_lang:  # detected: its listeners hear the speaker's own voice
            self._sink.on_speech_end(utterance, lang)
            return
        text = utterance.translations[lang]  # every target is written before it is spoken

        def emit(chunk: Audio) -> None:
            self._sink.on_speech(utterance, lang, chunk)

        try:
            await self._engines.speak(utterance, lang, text, self._cast_voice, emit)
        except Exception as error:
            log.warning("speech in %s failed on utterance %s: %s", lang, utterance.id, error)
            self._fail(utterance, f"speech in {lang} failed: {error}", lang)
            return
        self._sink.on_speech_end(utterance, lang)

    def _fail(self, utterance: Utterance, message: str, lang: str | None = None) -> None:
        if utterance.error is None:
            utterance.error = message
        self._sink.on_error(utterance, message, lang)
