"""Live translation in rooms: the lifecycle of each room's translation machinery.

A `RoomObserver`: for every room it keeps a speaker registry, voice casting, one pipeline
whose output a `RoomSink` plays and captions, and a feeder per participant that cuts their
16 kHz stream into utterances. Where each concern lives:

- who hears what at which gain: `media.mix_policy`
- microphone -> VAD -> pipeline: `signaling.feeders`
- voiceprints: `ai.identify`
- captions, speakers, latency as JSON: `signaling.captions`
- playouts and playout progress: `signaling.room_sink`
- translations heard back by a microphone, never translated again: `signaling.heard_back`
- co-located phones (tables): `media.table`, wired in by `signaling.tables`
- the `set_mix` / `rename_speaker` / `set_table` messages: `signaling.handlers`
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field

from ai.casting import VoiceCasting
from ai.identify import Embed, VoiceprintIdentifier
from ai.kokoro_voices import KOKORO_LANGUAGES
from ai.pipeline import PipelineEngines, RoomPipeline
from ai.speakers import SpeakerRegistry
from ai.utterance import Audio, Utterance
from ai.vad import VadSettings
from media.mix_policy import translated_mix
from media.playout import TranslationPlayout
from signaling.captions import Announcer
from signaling.feeders import Feeders
from signaling.handlers import live_messages
from signaling.heard_back import languages_near
from signaling.messages import MessageRegistry
from signaling.metrics import Metrics
from signaling.room_sink import AwaitedPlayout, RoomSink
from signaling.rooms import Participant, Room, RoomObserver
from signaling.tables import RoomTables

__all__ = ["Embed", "LiveRoom", "LiveTranslation"]

log = logging.getLogger(__name__)

DETECTION_MIN_SECONDS = 1.0
"""An utterance shorter than this ("ok", "sí") never changes the language a speaker is
taken to speak: language identification on a word or two is a guess. One longer
utterance detected in another language does: a speaker who switches is followed from
their next utterance on, and one heard by the wrong ear at first is corrected at once."""


@dataclass(eq=False)
class LiveRoom:
    room: Room
    registry: SpeakerRegistry
    casting: VoiceCasting
    announcer: Announcer
    sink: RoomSink
    tables: RoomTables
    pipeline: RoomPipeline = field(init=False)
    feeders: Feeders = field(init=False)
    voices: dict[str, str] = field(default_factory=dict)
    """The synthetic voice last cast for each speaker, for the speakers list."""
    chores: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def playouts(self) -> dict[str, TranslationPlayout]:
        return self.sink.playouts

    @property
    def awaiting(self) -> dict[str, AwaitedPlayout]:
        return self.sink.awaiting


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
        self._chores: set[asyncio.Task[None]] = set()
        """Every room's chores, closed rooms' included, for `close` to await."""
        metrics.sample_with(self._sample)

    def register_messages(self, registry: MessageRegistry) -> None:
        live_messages(registry, self)

    def rename_speaker(self, participant: Participant, speaker: str, name: str) -> None:
        live = self.rooms.get(participant.room.id)
        if live is None:
            raise KeyError(f"no speaker {speaker!r} in this room")
        live.registry.rename(speaker, name)
        live.announcer.speakers(live.voices)

    async def set_table(
        self, participant: Participant, other_id: str, together: bool | None
    ) -> None:
        live = self.rooms.get(participant.room.id)
        other = participant.room.participants.get(other_id)
        if live is None or other is None:
            raise KeyError(f"no participant {other_id!r} in this room")
        if other is participant:
            raise ValueError("you are always at your own table")
        await live.tables.override(participant, other, together)

    def playout(self, live: LiveRoom, lang: str) -> TranslationPlayout:
        return live.sink.playout(lang)

    # -- RoomObserver -----------------------------------------------------------------
    def room_opened(self, room: Room) -> None:
        room.mixer.policy = translated_mix
        registry = SpeakerRegistry()
        announcer = Announcer(room, registry)
        live = LiveRoom(
            room,
            registry,
            VoiceCasting(KOKORO_LANGUAGES),
            announcer,
            RoomSink(
                room.mixer, announcer, self._metrics, lambda u: follow_spoken_language(room, u)
            ),
            RoomTables(room),
        )
        identifier = VoiceprintIdentifier(
            self._embed,
            registry,
            lambda pid: p.name if (p := room.participants.get(pid)) else None,
            lambda: announcer.speakers(live.voices),
        )
        live.pipeline = RoomPipeline(
            self._engines,
            identifier,
            lambda: {p.lang for p in room.participants.values()},
            lambda speaker, lang, audio: self._cast(live, speaker, lang, audio),
            live.sink,
            heard_back=lambda u: live.sink.played.heard_back(u, languages_near(
                u.source_id, live.tables.groups, {p.id: p.lang for p in room.participants.values()}
            )),
        )
        live.feeders = Feeders(
            room.id,
            self._vad,
            submit=live.pipeline.submit,
            on_segmented=self._metrics.utterances.labels("segmented").inc,
            clean=live.tables.clean,
        )
        self.rooms[room.id] = live

    def room_closed(self, room: Room) -> None:
        live = self.rooms.pop(room.id, None)
        if live is not None:
            self._spawn(live, self._close_room(live))

    def participant_joined(self, room: Room, participant: Participant) -> None:
        live = self.rooms[room.id]
        live.tables.add(participant)
        live.feeders.start(participant)
        if live.registry.speakers():
            live.announcer.speakers(live.voices, to=participant)

    def participant_left(self, room: Room, participant: Participant) -> None:
        live = self.rooms.get(room.id)
        if live is None:
            return
        self._spawn(live, live.feeders.stop(participant.id))
        self._spawn(live, live.tables.remove(participant))
        live.sink.forget_source(participant.id)
        self._spawn(live, live.pipeline.cancel_source(participant.id))
        # Speakers heard only on this device go with it; one who also spoke elsewhere stays.
        gone = live.registry.forget_connection(participant.id)
        for speaker_id in [*gone, participant.id]:
            live.casting.forget(speaker_id)
            live.voices.pop(speaker_id, None)
        if gone:
            live.announcer.speakers(live.voices)

    # -- helpers ------------------------------------------------------------------------
    async def _cast(self, live: LiveRoom, speaker_id: str, lang: str, audio: Audio) -> str:
        voice = await live.casting.cast(speaker_id, lang, audio)
        if live.voices.get(speaker_id) != voice:
            live.voices[speaker_id] = voice
            live.announcer.speakers(live.voices)
        return voice

    def _spawn(self, live: LiveRoom, work: Awaitable[None]) -> None:
        """Runs `work` as a chore of the room; a failure is logged."""

        async def run() -> None:
            await work

        def ended(task: asyncio.Task[None]) -> None:
            live.chores.discard(task)
            self._chores.discard(task)
            if not task.cancelled() and (error := task.exception()) is not None:
                log.error("chore of room %s failed", live.room.id, exc_info=error)

        task = asyncio.create_task(run())
        live.chores.add(task)
        self._chores.add(task)
        task.add_done_callback(ended)

    async def _close_room(self, live: LiveRoom) -> None:
        await live.feeders.close()
        self._count_table_work(live)
        live.tables.close()
        await live.pipeline.close()
        live.sink.awaiting.clear()

    async def close(self) -> None:
        """Closes every room's pipeline and waits for leftover chores; at app shutdown."""
        for live in list(self.rooms.values()):
            await self._close_room(live)
        self.rooms.clear()
        await asyncio.gather(*self._chores, return_exceptions=True)

    def _count_table_work(self, live: LiveRoom) -> None:
        duplicates, echo_seconds = live.tables.take_counts()
        self._metrics.duplicates_suppressed.inc(duplicates)
        self._metrics.echo_suppressed_seconds.inc(echo_seconds)

    def _sample(self) -> None:
        rooms = list(self.rooms.values())
        for live in rooms:
            self._count_table_work(live)
        groups = [group for live in rooms for group in live.tables.groups]
        self._metrics.colocated_groups.set(len(groups))
        self._metrics.colocated_participants.set(sum(len(group) for group in groups))
        depth = self._metrics.queue_depth
        depth.labels("table_playback_ticks").set(sum(live.tables.backlog for live in rooms))
        depth.labels("inbound_16k").set(sum(live.feeders.queued for live in rooms))
        depth.labels("translator_batch").set(self._engines.translate.batcher.pending)
        depth.labels("in_flight_utterances").set(sum(live.pipeline.in_flight for live in rooms))
        depth.labels("playout_seconds").set(
            sum(p.queued_seconds for live in rooms for p in live.playouts.values())
        )


def follow_spoken_language(room: Room, utterance: Utterance) -> None:
    """Follows the language a participant speaks from what was detected on their speech, so
    their original voice reaches the listeners of that language (and them alone at full
    level). The utterance itself was already mixed as the language they were taken to
    speak while they said it; the change holds from their next utterance."""
    participant = room.participants.get(utterance.source_id)
    lang = utterance.source_lang
    if participant is None or participant.speaks is not None or lang is None:
        return  # gone, or pinned: nothing was detected
    if utterance.duration < DETECTION_MIN_SECONDS or not (utterance.transcript or "").strip():
        return
    if participant.spoke(lang):
        room.send_roster()
