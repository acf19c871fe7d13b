"""Rooms and their participants, with hooks for features that attach to them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from media.inbound import InboundAudio
from media.mixer import Listener, RoomMixer
from media.outbound import ListenerTrack

log = logging.getLogger(__name__)

LEVELS_INTERVAL = 0.2
"""Seconds between `levels` messages: 5 a second is smooth enough for a speaking ring."""

RESUME_GRACE_SECONDS = 30.0
"""How long a participant whose connection dropped keeps their place (id, voice, mix)
for a `resume`. A phone switching from Wi-Fi to 4G, or woken from a locked screen, is back
within a few seconds; the client itself gives up after 30 s."""

HELD_MESSAGES = 256
"""Messages kept for a participant while they reconnect, replayed on resume (the oldest
go first when more come); the same bound as a live session's outbox."""

NOT_HELD = frozenset({"levels", "participants", "latency"})
"""Messages that mean nothing later: meters, rosters (`resumed` carries a fresh one) and
the latency of audio the participant never heard."""

Send = Callable[[dict[str, Any]], None]


@dataclass(eq=False)
class Participant:
    """One connected person. `audio` is their microphone (a 16 kHz feed for the pipeline
    and a mix source); `listener` is what the room mixer sends them."""

    id: str
    name: str
    lang: str
    room: Room
    send: Send
    """Queue a server -> client message for this participant; never blocks."""
    speaks: str | None = None
    """The language they pinned as the one they speak; None: detected per utterance,
    favouring `speaking`."""
    detected: str | None = None
    """The language their latest confidently detected utterance was in (see `spoke`)."""
    audio: InboundAudio = field(init=False)
    listener: Listener = field(init=False)
    resume_token: str = field(init=False, default="")
    """Secret that lets a new connection take this participant over (see `Rooms.resume`)."""
    reconnecting: bool = False
    held: deque[dict[str, Any]] = field(init=False)
    """What was sent to the participant while they were reconnecting."""

    def __post_init__(self) -> None:
        self.audio = InboundAudio(self.id, self.speaking)
        self.listener = Listener(self.id, self.lang)
        self.held = deque(maxlen=HELD_MESSAGES)

    @property
    def speaking(self) -> str:
        """The language they speak now: pinned, else last detected, else the one they hear.

        Their voice is mixed as this language: listeners of it hear them in the original,
        the others through a translation (`media.mix_policy`)."""
        return self.speaks or self.detected or self.lang

    @property
    def speaking_from(self) -> str:
        """Why `speaking` is what it is: "pinned", "detected", or "assumed" (as heard)."""
        if self.speaks is not None:
            return "pinned"
        return "detected" if self.detected is not None else "assumed"

    def pin_spoken(self, lang: str | None) -> bool:
        """Pins the language they speak (None: detect it again); True if the roster changed."""
        before = self.speaking, self.speaking_from
        self.speaks = lang
        return self._follow_speaking(before)

    def spoke(self, lang: str) -> bool:
        """One of their utterances was confidently detected in `lang`: from now on they are
        taken to speak it. True if the roster changed."""
        before = self.speaking, self.speaking_from
        self.detected = lang
        return self._follow_speaking(before)

    def _follow_speaking(self, before: tuple[str, str]) -> bool:
        self.audio.lang = self.speaking
        return (self.speaking, self.speaking_from) != before

    def describe(self) -> dict[str, Any]:
        """A roster entry; `table` lists who shares this participant's table, if anyone."""
        entry: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "lang": self.lang,
            "speaks": self.speaking,
            "speaks_from": self.speaking_from,
            "status": "reconnecting" if self.reconnecting else "connected",
        }
        if self.listener.mix.table:
            entry["table"] = sorted(self.listener.mix.table)
        return entry

    def hold(self, message: dict[str, Any]) -> None:
        """`send` while the participant is away: keep what they will still want."""
        if message.get("type") not in NOT_HELD:
            self.held.append(message)

    def take_held(self) -> list[dict[str, Any]]:
        messages = list(self.held)
        self.held.clear()
        return messages


class RoomObserver:
    """Override what you need; every hook runs on the event loop and must not block."""

    def room_opened(self, room: Room) -> None:
        """Before the first participant joins."""

    def room_closed(self, room: Room) -> None:
        """The last participant left and the id is free again; the mixer is stopping.

        Called before anyone can rejoin under the same id, so an observer that keys its
        state by room id never sees a new room's `room_opened` before this."""

    def participant_joined(self, room: Room, participant: Participant) -> None:
        """The participant is in the room and mixed; media may not flow yet."""

    def participant_left(self, room: Room, participant: Participant) -> None:
        """The participant's media is released; their 16 kHz queues get nothing more."""

    def language_changed(self, room: Room, participant: Participant, previous: str) -> None:
        """The participant now hears `participant.lang` (and is taken to speak it, until
        they pin another or are heard speaking another)."""


class RoomFull(Exception):
    pass


class TooManyRooms(Exception):
    pass


class Room:
    def __init__(self, room_id: str, mixer: RoomMixer) -> None:
        self.id = room_id
        self.mixer = mixer
        self.participants: dict[str, Participant] = {}
        self.passcode: str | None = None
        """Set by whoever opened the room; later joiners must give it."""
        self._levels: asyncio.Task[None] | None = None

    def roster(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self.participants.values()]

    def send_roster(self) -> None:
        """The `participants` list, to everyone."""
        self.broadcast({"type": "participants", "participants": self.roster()})

    def broadcast(self, message: dict[str, Any], exclude: Participant | None = None) -> None:
        for participant in list(self.participants.values()):
            if participant is not exclude:
                participant.send(message)

    def start(self) -> None:
        self.mixer.start()
        self._levels = asyncio.create_task(self._send_levels(), name=f"levels-{self.id}")

    async def stop(self) -> None:
        if self._levels is not None:
            self._levels.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._levels
        await self.mixer.stop()

    async def _send_levels(self) -> None:
        was_audible = False
        while True:
            await asyncio.sleep(LEVELS_INTERVAL)
            levels = {
                p.id: round(p.audio.take_level(), 2)
                for p in self.participants.values()
                if p.audio.attached
            }
            audible = any(levels.values())
            if audible or was_audible:
                self.broadcast({"type": "levels", "levels": levels})
            was_audible = audible


class Rooms:
    """Every room on the server. Rooms open on first join and close with the last leave."""

    def __init__(
        self,
        max_participants: int = 50,
        mixer_factory: Callable[[], RoomMixer] | None = None,
        executor: Executor | None = None,
        max_rooms: int = 100,
        resume_grace: float = RESUME_GRACE_SECONDS,
    ) -> None:
        self.max_participants = max_participants
        self.max_rooms = max_rooms
        self.resume_grace = resume_grace
        self._mixer_factory = mixer_factory or (lambda: RoomMixer(executor=executor))
        self._rooms: dict[str, Room] = {}
        self._observers: list[RoomObserver] = []
        self._ids: set[str] = set()
        self._by_token: dict[str, Participant] = {}
        self._grace: dict[Participant, asyncio.Task[None]] = {}
        """Per participant who is reconnecting, the task that makes them leave at the end."""
        self._closing = False

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def __len__(self) -> int:
        return len(self._rooms)

    def get(self, room_id: str) -> Room | None:
        return self._rooms.get(room_id)

    @property
    def participant_count(self) -> int:
        return len(self._ids)

    @property
    def encoding(self) -> tuple[int, int]:
        """(outbound tracks fed, distinct Opus encodes feeding them) in the last tick of
        every room: the encode-once saving, for metrics."""
        listeners = sum(room.mixer.stats.listeners for room in self._rooms.values())
        streams = sum(room.mixer.stats.encode_streams for room in self._rooms.values())
        return listeners, streams

    def mixer_totals(self) -> dict[str, int]:
        """Over every open room: mixers ticking (not asleep in a silent room), ticks run,
        late and skipped; for /health (an idle server runs no ticks at all)."""
        mixers = [room.mixer for room in self._rooms.values()]
        return {
            "ticking": sum(not mixer.sleeping for mixer in mixers),
            "ticks": sum(mixer.stats.ticks for mixer in mixers),
            "late_ticks": sum(mixer.stats.late_ticks for mixer in mixers),
            "skipped_ticks": sum(mixer.stats.skipped_ticks for mixer in mixers),
        }

    def add_observer(self, observer: RoomObserver) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: RoomObserver) -> None:
        with contextlib.suppress(ValueError):
            self._observers.remove(observer)

    def join(self, room_id: str, name: str, lang: str, send: Send) -> Participant:
        room = self._rooms.get(room_id)
        if room is not None and len(room.participants) >= self.max_participants:
            raise RoomFull(f"room {room_id!r} has {self.max_participants} participants already")
        if room is None and len(self._rooms) >= self.max_rooms:
            raise TooManyRooms(f"the server has {self.max_rooms} rooms open already")
        if room is None:
            room = self._rooms[room_id] = Room(room_id, self._mixer_factory())
            room.start()
            self._notify("room_opened", room)
        participant = Participant(self._new_id(), name, lang, room, send)
        self._issue_token(participant)
        room.participants[participant.id] = participant
        room.mixer.add_listener(participant.listener)
        room.mixer.add_source(participant.id, participant.audio)
        self._notify("participant_joined", room, participant)
        room.broadcast({"type": "participants", "participants": room.roster()}, participant)
        return participant

    def set_lang(self, participant: Participant, lang: str) -> None:
        previous = participant.lang
        participant.lang = participant.listener.lang = lang
        participant.audio.lang = participant.speaking
        room = participant.room
        self._notify("language_changed", room, participant, previous)
        room.send_roster()

    async def suspend(self, participant: Participant) -> None:
        """The participant's connection dropped without a `leave`: keep their place for
        `resume_grace` seconds, showing them as reconnecting; then they leave.

        Their media is released (the peer connection is gone), but everything the room
        knows of them stays: id, name, language, mix settings, voiceprints, and what is
        sent to them meanwhile (`Participant.held`)."""
        if participant.room.participants.get(participant.id) is not participant:
            return  # already gone
        if self.resume_grace <= 0 or self._closing:
            await self.leave(participant)
            return
        participant.send = participant.hold
        await participant.audio.detach()
        if participant.reconnecting:
            return
        participant.reconnecting = True
        task = asyncio.create_task(self._expire(participant), name=f"grace-{participant.id}")
        self._grace[participant] = task
        task.add_done_callback(_log_failure)
        participant.room.broadcast(
            {"type": "participants", "participants": participant.room.roster()}, participant
        )

    def claim(self, token: str) -> Participant | None:
        """The participant whose resume token this is, if they are still in their room.
        The token is used up at once, so two connections cannot both resume with it."""
        participant = self._by_token.pop(token, None)
        if participant is None:
            return None
        participant.resume_token = ""
        in_room = participant.room.participants.get(participant.id) is participant
        return participant if in_room else None

    async def resume(self, participant: Participant, send: Send) -> bool:
        """A `claim`ed participant, back on a new connection that sends through `send`,
        with a new resume token. False if they left meanwhile (their grace ran out)."""
        await _cancel(self._grace.pop(participant, None))
        if participant.room.participants.get(participant.id) is not participant:
            return False
        await participant.audio.detach()
        # aiortc stops a sender's track with its peer connection; the next one gets a new.
        participant.listener.track.stop()
        participant.listener.track = ListenerTrack()
        self._issue_token(participant)
        participant.send = send
        if participant.reconnecting:
            participant.reconnecting = False
            participant.room.broadcast(
                {"type": "participants", "participants": participant.room.roster()}, participant
            )
        return True

    async def _expire(self, participant: Participant) -> None:
        await asyncio.sleep(self.resume_grace)
        self._grace.pop(participant, None)
        await self.leave(participant)

    async def leave(self, participant: Participant) -> None:
        """Idempotent: remove the participant and release their media."""
        room = participant.room
        if room.participants.pop(participant.id, None) is None:
            return
        self._ids.discard(participant.id)
        self._by_token.pop(participant.resume_token, None)
        grace = self._grace.pop(participant, None)
        if grace is not asyncio.current_task():
            await _cancel(grace)
        room.mixer.remove_source(participant.id)
        room.mixer.remove_listener(participant.id)
        await participant.audio.close()
        self._notify("participant_left", room, participant)
        if room.participants:
            room.broadcast({"type": "participants", "participants": room.roster()})
            return
        if self._rooms.get(room.id) is room:
            del self._rooms[room.id]
        # Notified before the await: a rejoin while the mixer stops opens a new room under
        # this id, and observers must have closed the old one by then.
        self._notify("room_closed", room)
        await room.stop()

    async def close_all(self) -> None:
        self._closing = True
        for room in list(self._rooms.values()):
            for participant in list(room.participants.values()):
                await self.leave(participant)

    def _issue_token(self, participant: Participant) -> None:
        self._by_token.pop(participant.resume_token, None)
        participant.resume_token = secrets.token_urlsafe(32)
        self._by_token[participant.resume_token] = participant

    def _new_id(self) -> str:
        while True:
            candidate = "p" + secrets.token_hex(4)
            if candidate not in self._ids:
                self._ids.add(candidate)
                return candidate

    def _notify(self, hook: str, *args: Any) -> None:
        for observer in list(self._observers):
            try:
                getattr(observer, hook)(*args)
            except Exception:
                log.exception("room observer %r failed in %s", observer, hook)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
