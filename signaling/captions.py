"""A room's captions, latency reports and speaker lists as protocol messages (docs/protocol.md).

This module only formats and sends; it decides nothing about who hears what.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Any

from ai.speakers import Speaker, SpeakerRegistry
from ai.utterance import Stage, Utterance
from signaling.rooms import Participant, Room

UNNAMED_COLOR = "#4363d8"
"""A speaker with no voiceprint entry yet (named after their device) gets this color."""


class Announcer:
    """Sends one room's live-translation messages to its participants."""

    def __init__(self, room: Room, registry: SpeakerRegistry) -> None:
        self._room = room
        self._registry = registry

    def send(self, lang: str | Collection[str] | None, message: dict[str, Any]) -> None:
        """To every participant who listens in `lang` (or in one of several), or to
        everyone if None."""
        langs = None if lang is None else {lang} if isinstance(lang, str) else set(lang)
        for participant in list(self._room.participants.values()):
            if langs is None or participant.lang in langs:
                participant.send(message)

    def caption(
        self,
        utterance: Utterance,
        lang: str,
        text: str,
        final: bool,
        *,
        to: str | Collection[str] | None,
        **extra: Any,
    ) -> None:
        """A `caption` of `utterance` in `lang`, to the listeners of `to` (None: everyone)."""
        end_epoch = time.time() - (
            time.monotonic() - utterance.stamps.get(Stage.LAST_VOICED, time.monotonic())
        )
        self.send(
            to,
            {
                "type": "caption",
                "utterance": utterance.id,
                "speaker": self._speaker(utterance),
                "source_lang": utterance.source_lang,
                "source_text": utterance.transcript or "",
                "lang": lang,
                "text": text,
                "final": final,
                "start": round((end_epoch - utterance.duration) * 1000),
                "end": round(end_epoch * 1000),
                "t": stage_ms(utterance),
                **extra,
            },
        )

    def latency(self, utterance: Utterance, lang: str, started: float) -> None:
        """A `latency` report to `lang`'s listeners: its translation started playing then."""
        stamps = utterance.stamps
        last_voiced = stamps.get(Stage.LAST_VOICED, started)
        self.send(
            lang,
            {
                "type": "latency",
                "utterance": utterance.id,
                "lang": lang,
                "total_ms": round((started - last_voiced) * 1000),
                "stages": stage_ms(utterance)
                | {"playout_ms": _span(stamps, Stage.FIRST_TTS, started)},
            },
        )

    def speakers(self, voices: Mapping[str, str], to: Participant | None = None) -> None:
        """The `speakers` list, with the voice last cast for each, to `to` or everyone."""
        message = {
            "type": "speakers",
            "speakers": [_describe(s, voices.get(s.id)) for s in self._registry.speakers()],
        }
        if to is None:
            self._room.broadcast(message)
        else:
            to.send(message)

    def _speaker(self, utterance: Utterance) -> dict[str, Any]:
        known = {s.id: s for s in self._registry.speakers()}
        speaker = known.get(utterance.speaker_id or "")
        if speaker is not None:
            return _describe(speaker, None)
        participant = self._room.participants.get(utterance.source_id)
        name = participant.name if participant else utterance.speaker_name or "?"
        return {
            "id": utterance.speaker_id or utterance.source_id,
            "name": utterance.speaker_name or name,
            "color": UNNAMED_COLOR,
            "participant": utterance.source_id,
        }


def _describe(speaker: Speaker, voice: str | None) -> dict[str, Any]:
    return {
        "id": speaker.id,
        "name": speaker.name,
        "color": speaker.color,
        "participant": speaker.connection_id,
        "seconds": round(speaker.seconds, 1),
        "confidence": round(speaker.confidence, 2),
        "voice": voice,
    }


def _span(stamps: dict[str, float], start: str, end: float | str) -> int | None:
    if start not in stamps:
        return None
    end_at = stamps.get(end) if isinstance(end, str) else end
    return None if end_at is None else round((end_at - stamps[start]) * 1000)


def stage_ms(utterance: Utterance) -> dict[str, int | None]:
    """Milliseconds each pipeline stage took, as the `t` of a caption."""
    s = utterance.stamps
    return {
        "vad_hangover_ms": _span(s, Stage.LAST_VOICED, Stage.VAD_END),
        "voiceprint_ms": _span(s, Stage.VAD_END, Stage.VOICEPRINT),
        "translate_ms": _span(s, Stage.VAD_END, Stage.TRANSLATED),
        "tts_ms": _span(s, Stage.TRANSLATED, Stage.FIRST_TTS),
    }
