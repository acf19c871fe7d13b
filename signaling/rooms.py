"""Rooms and their participants, with hooks for features that attach to them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from media.inbound import InboundAudio
from media.mixer import Listener, RoomMixer

log = logging.getLogger(__name__)

LEVELS_INTERVAL = 0.2
"""Seconds between `levels` messages: 5 a second is smooth enough for a speaking ring."""

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
    favouring `lang`."""
    audio: InboundAudio = field(init=False)
    listener: Listener = field(init=False)

    def __post_init__(self) -> None:
        self.audio = InboundAudio(self.id, self.lang)
        self.listener = Listener(self.id, self.lang)

    def describe(self) -> dict[str, Any]:
        """A roster entry; `table` lists who shares this participant's table, if anyone."""
        entry: dict[str, Any] = {"id": self.id, "name": self.name, "lang": self.lang}
        if self.listener.mix.table:
            entry["table"] = sorted(self.listener.mix.table)
        return entry


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
        """The participant now hears (and is taken to speak) `participant.lang`."""


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
    ) -> None:
        self.max_participants = max_participants
        self.max_rooms = max_rooms
        self._mixer_factory = mixer_factory or (lambda: RoomMixer(executor=executor))
        self._rooms: dict[str, Room] = {}
        self._observers: list[RoomObserver] = []
        self._ids: set[str] = set()

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
        room.participants[participant.id] = participant
        room.mixer.add_listener(participant.listener)
        room.mixer.add_source(participant.id, participant.audio)
        self._notify("participant_joined", room, participant)
        room.broadcast({"type": "participants", "participants": room.roster()}, participant)
        return participant

    def set_lang(self, participant: Participant, lang: str) -> None:
        previous = participant.lang
        participant.lang = participant.listener.lang = participant.audio.lang = lang
        room = participant.room
        self._notify("language_changed", room, participant, previous)
        room.broadcast({"type": "participants", "participants": room.roster()})

    async def leave(self, participant: Participant) -> None:
        """Idempotent: remove the participant and release their media."""
        room = participant.room
        if room.participants.pop(participant.id, None) is None:
            return
        self._ids.discard(participant.id)
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
        for room in list(self._rooms.values()):
            for participant in list(room.participants.values()):
                await self.leave(participant)

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
