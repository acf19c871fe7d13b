"""A room's pipeline output: speech into one playout per language, captions to listeners.

It also follows each utterance until its translation starts playing in every language
(or is dropped), to report latency and to observe the stage metrics once, and keeps what
was played when (`played`), so that a microphone that hears it back is not translated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ai.utterance import Audio, Stage, Utterance
from media.frames import FRAME_SAMPLES, MIX_RATE
from media.mixer import RoomMixer
from media.playout import TranslationPlayout
from signaling.captions import Announcer
from signaling.heard_back import PlayedTranslations
from signaling.metrics import Metrics


@dataclass(eq=False)
class AwaitedPlayout:
    """An utterance whose translations are queued for playout, until each has started."""

    utterance: Utterance
    langs: set[str]
    observed: bool = False


class RoomSink:
    """`PipelineSink` for one room. `heard` is told each utterance whose spoken language
    is known (pinned or detected), when its source transcript arrives."""

    def __init__(
        self,
        mixer: RoomMixer,
        announcer: Announcer,
        metrics: Metrics,
        heard: Callable[[Utterance], None] = lambda _: None,
    ) -> None:
        self._mixer = mixer
        self._announcer = announcer
        self._metrics = metrics
        self._heard = heard
        self.playouts: dict[str, TranslationPlayout] = {}
        self.awaiting: dict[str, AwaitedPlayout] = {}
        self.played = PlayedTranslations()
        self._discarded: set[str] = set()

    def playout(self, lang: str) -> TranslationPlayout:
        """The room's playout of translations into `lang`, mixed from its first use."""
        playout = self.playouts.get(lang)
        if playout is None:
            playout = self.playouts[lang] = TranslationPlayout(
                lang,
                on_started=lambda uid: self._started(lang, uid),
                on_dropped=lambda uid: self._dropped(lang, uid),
                on_underrun=lambda: self._metrics.underrun_seconds.inc(FRAME_SAMPLES / MIX_RATE),
                on_ended=lambda uid: self.played.ended(uid, lang, time.monotonic()),
            )
            self._mixer.add_source(f"translation:{lang}", playout)
        return playout

    def forget_source(self, source_id: str) -> None:
        """Drops everything queued or awaited from a participant who left."""
        for playout in self.playouts.values():
            playout.discard_origin(source_id)
        for uid, awaiting in list(self.awaiting.items()):
            if awaiting.utterance.source_id == source_id:
                del self.awaiting[uid]

    # -- PipelineSink ------------------------------------------------------------------
    def on_dispatch(self, utterance: Utterance, targets: Sequence[str], order_key: float) -> None:
        for lang in targets:
            self.playout(lang).reserve(utterance.id, utterance.source_id, order_key)
        if targets:
            self.awaiting[utterance.id] = AwaitedPlayout(utterance, set(targets))

    def on_caption(self, utterance: Utterance, lang: str, text: str, final: bool) -> None:
        if final:
            self._announcer.caption(utterance, lang, text, True, to=lang)
            return
        # The source transcript, while the translations are spoken: to everyone who will get
        # a final caption of it (its targets and the spoken language), so that nobody who
        # joined after it was dispatched is left with a partial caption that never ends.
        awaiting = self.awaiting.get(utterance.id)
        self._announcer.caption(
            utterance, lang, text, False, to={lang} | (awaiting.langs if awaiting else set())
        )
        self._heard(utterance)

    def on_speech(self, utterance: Utterance, lang: str, chunk: Audio) -> None:
        self.playout(lang).feed(utterance.id, chunk)
        self.played.spoken(utterance.id, lang, utterance.translations.get(lang, ""))

    def on_speech_end(self, utterance: Utterance, lang: str) -> None:
        playout = self.playout(lang)
        playout.finish(utterance.id)
        if utterance.id not in playout:  # nothing was spoken: no start will ever be reported
            self._done_with(utterance.id, lang)

    def on_error(self, utterance: Utterance, message: str, lang: str | None) -> None:
        for code, playout in self.playouts.items():
            if lang is None or code == lang:
                playout.cancel(utterance.id)
        caption_lang = lang or utterance.source_lang or ""
        text = utterance.translations.get(caption_lang, "")
        self._announcer.caption(utterance, caption_lang, text, True, to=lang, error=message)
        self._done_with(utterance.id, lang)

    def on_discarded(self, utterance: Utterance) -> None:
        for playout in self.playouts.values():
            playout.cancel(utterance.id)
        self.awaiting.pop(utterance.id, None)
        self._discarded.add(utterance.id)
        self._metrics.dropped.labels("heard_back").inc()

    def on_finished(self, utterance: Utterance) -> None:
        if utterance.id in self._discarded:
            self._discarded.discard(utterance.id)
            outcome = "heard_back"
        else:
            outcome = "failed" if utterance.error else "translated"
        self._metrics.utterances.labels(outcome).inc()

    # -- playout progress --------------------------------------------------------------
    def _started(self, lang: str, utterance_id: str) -> None:
        now = time.monotonic()
        self.played.started(utterance_id, lang, now)
        awaiting = self.awaiting.get(utterance_id)
        if awaiting is None:
            return
        utterance = awaiting.utterance
        if Stage.FIRST_SENT not in utterance.stamps:
            utterance.stamp(Stage.FIRST_SENT, now)
        if not awaiting.observed:
            awaiting.observed = True
            self._metrics.observe_utterance(utterance)
        self._announcer.latency(utterance, lang, now)
        self._done_with(utterance_id, lang)

    def _dropped(self, lang: str, utterance_id: str) -> None:
        self._metrics.dropped.labels("backlog").inc()
        awaiting = self.awaiting.get(utterance_id)
        if awaiting is not None:
            utterance = awaiting.utterance
            text = utterance.translations.get(lang, "")
            self._announcer.caption(utterance, lang, text, True, to=lang, dropped=True)
        self._done_with(utterance_id, lang)

    def _done_with(self, utterance_id: str, lang: str | None) -> None:
        awaiting = self.awaiting.get(utterance_id)
        if awaiting is None:
            return
        if lang is None:
            awaiting.langs.clear()
        else:
            awaiting.langs.discard(lang)
        if not awaiting.langs:
            del self.awaiting[utterance_id]
