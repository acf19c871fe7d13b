"""Live translation in rooms: each microphone through VAD and the pipeline into the mixes.

A `RoomObserver`: for every room it keeps a speaker registry, voice casting, one pipeline
and one translation playout per language someone listens in; for every participant a
feeder task that cuts their 16 kHz stream into utterances. Captions, speaker lists and
latency reports go out as signaling messages (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ai.casting import VoiceCasting
from ai.kokoro_voices import KOKORO_LANGUAGES
from ai.pipeline import PipelineEngines, RoomPipeline
from ai.speakers import Speaker, SpeakerRegistry
from ai.utterance import Audio, Stage, Utterance
from ai.vad import VadSegmenter, VadSettings
from media.frames import SourceFrame
from media.inbound import Chunk16k
from media.mixer import Listener
from media.playout import TranslationPlayout
from signaling.messages import ErrorCode, Message, MessageRegistry, ProtocolError, text
from signaling.metrics import Metrics
from signaling.rooms import Participant, Room, RoomObserver
from signaling.session import Session

log = logging.getLogger(__name__)

DEFAULT_ORIGINAL = 0.18
"""The original voice's gain under a translation: -15 dB, loud enough to hear who speaks
and how, quiet enough that the translation is what you follow."""

INBOUND_QUEUE_CHUNKS = 250
"""16 kHz chunks (20 ms each, so 5 s) a feeder may fall behind before the oldest are
dropped; the VAD costs microseconds a chunk, so only a stalled loop gets there."""

Embed = Callable[[Audio], Awaitable[npt.NDArray[np.float32]]]


def translated_mix(listener: Listener, frame: SourceFrame, active: Sequence[SourceFrame]) -> float:
    """Gain of one frame in a listener's mix.

    Never yourself, not even your own translation. Same-language voices at full level.
    Translations into your language at full level. Voices in other languages at your
    `original` balance while a translation plays for you, and a little louder (its
    square root) while none does, so you hear someone start before their translation.
    """
    if frame.origin == listener.id:
        return 0.0
    if frame.kind == "translation":
        return 1.0 if frame.lang == listener.lang else 0.0
    if frame.lang == listener.lang:
        return 1.0
    original = float(listener.settings.get("original", DEFAULT_ORIGINAL))  # type: ignore[arg-type]
    translating = any(
        f.kind == "translation" and f.lang == listener.lang and f.origin != listener.id
        for f in active
    )
    return original if translating else original**0.5


class VoiceprintIdentifier:
    """`SpeakerIdentifier` over one room's registry: embed off-loop, assign on the loop."""

    def __init__(
        self,
        embed: Embed | None,
        registry: SpeakerRegistry,
        participant_name: Callable[[str], str | None],
        on_change: Callable[[], None],
    ) -> None:
        self._embed = embed
        self._registry = registry
        self._participant_name = participant_name
        self._on_change = on_change

    async def identify(self, utterance: Utterance) -> tuple[str, str | None]:
        owner = self._participant_name(utterance.source_id)
        if self._embed is None:
            return utterance.source_id, owner
        embedding = await self._embed(utterance.audio)
        assignment = self._registry.assign(
            embedding, utterance.source_id, utterance.duration, participant=owner
        )
        self._on_change()
        return assignment.speaker.id, assignment.speaker.name


@dataclass(eq=False)
class _Feeder:
    queue: asyncio.Queue[Chunk16k]
    task: asyncio.Task[None]


@dataclass(eq=False)
class _Awaiting:
    """An utterance whose translations are queued for playout, until each has started."""

    utterance: Utterance
    langs: set[str]
    observed: bool = False


@dataclass(eq=False)
class LiveRoom:
    room: Room
    registry: SpeakerRegistry
    casting: VoiceCasting
    pipeline: RoomPipeline = field(init=False)
    playouts: dict[str, TranslationPlayout] = field(default_factory=dict)
    feeders: dict[str, _Feeder] = field(default_factory=dict)
    awaiting: dict[str, _Awaiting] = field(default_factory=dict)
    voices: dict[str, str] = field(default_factory=dict)
    """The synthetic voice last cast for each speaker, for the speakers list."""
    chores: set[asyncio.Task[None]] = field(default_factory=set)


class LiveTranslation(RoomObserver):
    def __init__(
        self,
        engines: PipelineEngines,
        *,
        embed: Embed | None,
        metrics: Metrics,
        vad: VadSettings | None = None,
    ) -> None:
        self._engines = engines
        self._embed = embed
        self._metrics = metrics
        self._vad = vad or VadSettings()
        self.rooms: dict[str, LiveRoom] = {}
        metrics.sample_with(self._sample)

    # -- message types this feature adds --------------------------------------------
    def register_messages(self, registry: MessageRegistry) -> None:
        registry.register("set_mix", self._set_mix, {"original": _unit_interval})
        registry.register(
            "rename_speaker", self._rename_speaker, {"speaker": text(1, 32), "name": NAME}
        )

    async def _set_mix(self, session: Session, message: Message) -> None:
        assert session.participant is not None  # requires_join
        session.participant.listener.settings["original"] = message["original"]

    async def _rename_speaker(self, session: Session, message: Message) -> None:
        assert session.participant is not None  # requires_join
        live = self.rooms.get(session.participant.room.id)
        if live is None:
            raise ProtocolError(ErrorCode.BAD_FIELD, "this room has no speakers yet")
        try:
            live.registry.rename(message["speaker"], message["name"])
        except KeyError as error:
            raise ProtocolError("unknown_speaker", str(error.args[0])) from error
        except ValueError as error:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"rename_speaker: {error}") from error
        self._send_speakers(live)

    # -- RoomObserver -----------------------------------------------------------------
    def room_opened(self, room: Room) -> None:
        room.mixer.policy = translated_mix
        registry = SpeakerRegistry()
        live = LiveRoom(room, registry, VoiceCasting(KOKORO_LANGUAGES))
        identifier = VoiceprintIdentifier(
            self._embed,
            registry,
            lambda pid: p.name if (p := room.participants.get(pid)) else None,
            lambda: self._send_speakers(live),
        )
        live.pipeline = RoomPipeline(
            self._engines,
            identifier,
            lambda: {p.lang for p in room.participants.values()},
            lambda speaker, lang, audio: self._cast(live, speaker, lang, audio),
            _Sink(self, live),
        )
        self.rooms[room.id] = live

    def room_closed(self, room: Room) -> None:
        live = self.rooms.pop(room.id, None)
        if live is not None:
            self._spawn(live, self._close_room(live))

    def participant_joined(self, room: Room, participant: Participant) -> None:
        live = self.rooms[room.id]
        queue = participant.audio.subscribe_16k(INBOUND_QUEUE_CHUNKS)
        task = asyncio.create_task(
            self._feed(live, participant, queue), name=f"vad-{participant.id}"
        )
        live.feeders[participant.id] = _Feeder(queue, task)
        participant.listener.settings.setdefault("original", DEFAULT_ORIGINAL)
        if live.registry.speakers():
            participant.send(self._speakers_message(live))

    def participant_left(self, room: Room, participant: Participant) -> None:
        live = self.rooms.get(room.id)
        if live is None:
            return
        feeder = live.feeders.pop(participant.id, None)
        if feeder is not None:
            participant.audio.unsubscribe(feeder.queue)
            feeder.task.cancel()
        for playout in live.playouts.values():
            playout.discard_origin(participant.id)
        for uid, awaiting in list(live.awaiting.items()):
            if awaiting.utterance.source_id == participant.id:
                del live.awaiting[uid]
        self._spawn(live, live.pipeline.cancel_source(participant.id))
        # Speakers heard only on this device go with it; one who also spoke elsewhere stays.
        gone = live.registry.forget_connection(participant.id)
        for speaker_id in [*gone, participant.id]:
            live.casting.forget(speaker_id)
            live.voices.pop(speaker_id, None)
        if gone:
            self._send_speakers(live)

    # -- per participant ----------------------------------------------------------------
    async def _feed(
        self, live: LiveRoom, participant: Participant, queue: asyncio.Queue[Chunk16k]
    ) -> None:
        segmenter = VadSegmenter(self._vad, source_id=participant.id, room=live.room.id)
        while True:
            chunk = await queue.get()
            for utterance in segmenter.push(chunk.samples, chunk.time, chunk.received):
                utterance.source_lang = participant.lang
                self._metrics.utterances.labels("segmented").inc()
                live.pipeline.submit(utterance)

    # -- pipeline events ---------------------------------------------------------------------
    def playout(self, live: LiveRoom, lang: str) -> TranslationPlayout:
        playout = live.playouts.get(lang)
        if playout is None:
            playout = live.playouts[lang] = TranslationPlayout(
                lang,
                on_started=lambda uid: self._started(live, lang, uid),
                on_dropped=lambda uid: self._dropped(live, lang, uid),
            )
            live.room.mixer.add_source(f"translation:{lang}", playout)
        return playout

    def caption(
        self, live: LiveRoom, utterance: Utterance, lang: str, text: str, final: bool, **extra: Any
    ) -> dict[str, Any]:
        speaker = self._speaker(live, utterance)
        end_epoch = time.time() - (
            time.monotonic() - utterance.stamps.get(Stage.LAST_VOICED, time.monotonic())
        )
        return {
            "type": "caption",
            "utterance": utterance.id,
            "speaker": speaker,
            "source_lang": utterance.source_lang,
            "source_text": utterance.transcript or "",
            "lang": lang,
            "text": text,
            "final": final,
            "start": round((end_epoch - utterance.duration) * 1000),
            "end": round(end_epoch * 1000),
            "t": _stage_ms(utterance),
            **extra,
        }

    def send_to(self, live: LiveRoom, lang: str | None, message: dict[str, Any]) -> None:
        for participant in list(live.room.participants.values()):
            if lang is None or participant.lang == lang:
                participant.send(message)

    def _started(self, live: LiveRoom, lang: str, utterance_id: str) -> None:
        awaiting = live.awaiting.get(utterance_id)
        if awaiting is None:
            return
        utterance = awaiting.utterance
        now = time.monotonic()
        if Stage.FIRST_SENT not in utterance.stamps:
            utterance.stamp(Stage.FIRST_SENT, now)
        if not awaiting.observed:
            awaiting.observed = True
            self._metrics.observe_utterance(utterance)
        stamps = utterance.stamps
        last_voiced = stamps.get(Stage.LAST_VOICED, now)
        self.send_to(
            live,
            lang,
            {
                "type": "latency",
                "utterance": utterance.id,
                "lang": lang,
                "total_ms": round((now - last_voiced) * 1000),
                "stages": _stage_ms(utterance)
                | {"playout_ms": _span(stamps, Stage.FIRST_TTS, now)},
            },
        )
        self.done_with(live, utterance_id, lang)

    def _dropped(self, live: LiveRoom, lang: str, utterance_id: str) -> None:
        self._metrics.dropped.labels("backlog").inc()
        awaiting = live.awaiting.get(utterance_id)
        if awaiting is not None:
            utterance = awaiting.utterance
            text = utterance.translations.get(lang, "")
            self.send_to(live, lang, self.caption(live, utterance, lang, text, True, dropped=True))
        self.done_with(live, utterance_id, lang)

    def done_with(self, live: LiveRoom, utterance_id: str, lang: str | None) -> None:
        awaiting = live.awaiting.get(utterance_id)
        if awaiting is None:
            return
        if lang is None:
            awaiting.langs.clear()
        else:
            awaiting.langs.discard(lang)
        if not awaiting.langs:
            del live.awaiting[utterance_id]

    # -- speakers ---------------------------------------------------------------------------
    def _speaker(self, live: LiveRoom, utterance: Utterance) -> dict[str, Any]:
        known = {s.id: s for s in live.registry.speakers()}
        speaker = known.get(utterance.speaker_id or "")
        participant = live.room.participants.get(utterance.source_id)
        name = participant.name if participant else utterance.speaker_name or "?"
        if speaker is not None:
            return _describe(speaker, None)
        return {
            "id": utterance.speaker_id or utterance.source_id,
            "name": utterance.speaker_name or name,
            "color": "#4363d8",
            "participant": utterance.source_id,
        }

    def _cast(self, live: LiveRoom, speaker_id: str, lang: str, audio: Audio) -> str:
        voice = live.casting.voice_for(speaker_id, lang, audio)
        if live.voices.get(speaker_id) != voice:
            live.voices[speaker_id] = voice
            self._send_speakers(live)
        return voice

    def _speakers_message(self, live: LiveRoom) -> dict[str, Any]:
        return {
            "type": "speakers",
            "speakers": [_describe(s, live.voices.get(s.id)) for s in live.registry.speakers()],
        }

    def _send_speakers(self, live: LiveRoom) -> None:
        live.room.broadcast(self._speakers_message(live))

    # -- housekeeping ------------------------------------------------------------------------
    def _spawn(self, live: LiveRoom, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.create_task(run())
        live.chores.add(task)
        task.add_done_callback(live.chores.discard)

    async def _close_room(self, live: LiveRoom) -> None:
        for feeder in live.feeders.values():
            feeder.task.cancel()
        await asyncio.gather(*(f.task for f in live.feeders.values()), return_exceptions=True)
        live.feeders.clear()
        await live.pipeline.close()
        live.awaiting.clear()

    async def close(self) -> None:
        """Closes every room's pipeline and waits for leftover chores; at app shutdown."""
        for live in list(self.rooms.values()):
            await self._close_room(live)
        self.rooms.clear()
        chores = [task for live in self.rooms.values() for task in live.chores]
        await asyncio.gather(*chores, return_exceptions=True)

    def _sample(self) -> None:
        playouts = [p for live in self.rooms.values() for p in live.playouts.values()]
        feeders = [f for live in self.rooms.values() for f in live.feeders.values()]
        depth = self._metrics.queue_depth
        depth.labels("inbound_16k").set(sum(f.queue.qsize() for f in feeders))
        depth.labels("translator_batch").set(self._engines.translate.batcher.pending)
        depth.labels("in_flight_utterances").set(
            sum(live.pipeline.in_flight for live in self.rooms.values())
        )
        depth.labels("playout_seconds").set(sum(p.queued_seconds for p in playouts))


class _Sink:
    """`PipelineSink` for one room: captions to listeners, speech into the playouts."""

    def __init__(self, feature: LiveTranslation, live: LiveRoom) -> None:
        self._feature = feature
        self._live = live

    def on_dispatch(self, utterance: Utterance, targets: Sequence[str], order_key: float) -> None:
        live = self._live
        for lang in targets:
            self._feature.playout(live, lang).reserve(utterance.id, utterance.source_id, order_key)
        if targets:
            live.awaiting[utterance.id] = _Awaiting(utterance, set(targets))

    def on_caption(self, utterance: Utterance, lang: str, text: str, final: bool) -> None:
        message = self._feature.caption(self._live, utterance, lang, text, final)
        # The partial source transcript goes to everyone; finals to that language's listeners.
        self._feature.send_to(self._live, lang if final else None, message)

    def on_speech(self, utterance: Utterance, lang: str, chunk: Audio) -> None:
        self._feature.playout(self._live, lang).feed(utterance.id, chunk)

    def on_speech_end(self, utterance: Utterance, lang: str) -> None:
        playout = self._feature.playout(self._live, lang)
        playout.finish(utterance.id)
        if utterance.id not in playout:  # nothing was spoken: no start will ever be reported
            self._feature.done_with(self._live, utterance.id, lang)

    def on_error(self, utterance: Utterance, message: str, lang: str | None) -> None:
        live = self._live
        for code, playout in live.playouts.items():
            if lang is None or code == lang:
                playout.cancel(utterance.id)
        caption_lang = lang or utterance.source_lang or ""
        caption = self._feature.caption(
            live, utterance, caption_lang, utterance.translations.get(caption_lang, ""), True,
            error=message,
        )
        self._feature.send_to(live, lang, caption)
        self._feature.done_with(live, utterance.id, lang)

    def on_finished(self, utterance: Utterance) -> None:
        outcome = "failed" if utterance.error else "translated"
        self._feature._metrics.utterances.labels(outcome).inc()


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


def _stage_ms(utterance: Utterance) -> dict[str, int | None]:
    s = utterance.stamps
    return {
        "vad_hangover_ms": _span(s, Stage.LAST_VOICED, Stage.VAD_END),
        "voiceprint_ms": _span(s, Stage.VAD_END, Stage.VOICEPRINT),
        "translate_ms": _span(s, Stage.VAD_END, Stage.TRANSLATED),
        "tts_ms": _span(s, Stage.TRANSLATED, Stage.FIRST_TTS),
    }


def _unit_interval(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number from 0 to 1")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError("must be from 0 to 1")
    return float(value)


NAME = text(1, 64, printable=True)
