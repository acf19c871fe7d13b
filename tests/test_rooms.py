"""Rooms: lifecycle, capacity, language changes, roster broadcasts and observer hooks."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from ai.utterance import PIPELINE_RATE, Utterance
from signaling.live import follow_spoken_language
from signaling.rooms import Participant, Room, RoomFull, RoomObserver, Rooms


class Inbox:
    """Collects what the server would send one participant."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def rosters(self) -> list[list[str]]:
        return [
            [p["id"] for p in m["participants"]]
            for m in self.messages
            if m["type"] == "participants"
        ]


class Journal(RoomObserver):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def room_opened(self, room: Room) -> None:
        self.events.append(("opened", room.id))

    def room_closed(self, room: Room) -> None:
        self.events.append(("closed", room.id, room.mixer.listeners))

    def participant_joined(self, room: Room, participant: Participant) -> None:
        self.events.append(("joined", participant.name, participant.id in room.mixer.sources))

    def participant_left(self, room: Room, participant: Participant) -> None:
        self.events.append(("left", participant.name))

    def language_changed(self, room: Room, participant: Participant, previous: str) -> None:
        self.events.append(("lang", participant.name, previous, participant.lang))


@pytest.fixture
async def rooms() -> Rooms:
    registry = Rooms(max_participants=2)
    yield registry
    await registry.close_all()


async def test_rooms_open_on_first_join_and_close_with_the_last(rooms: Rooms) -> None:
    journal = Journal()
    rooms.add_observer(journal)
    ana_inbox, ben_inbox = Inbox(), Inbox()
    ana = rooms.join("r1", "Ana", "spa", ana_inbox)
    ben = rooms.join("r1", "Ben", "eng", ben_inbox)
    room = rooms.get("r1")
    assert room is not None and len(rooms) == 1 and rooms.participant_count == 2
    assert room.roster() == [ana.describe(), ben.describe()]
    assert ana_inbox.rosters() == [[ana.id, ben.id]]  # told when Ben came
    assert ben_inbox.messages == []  # the joiner gets `joined` from the session instead

    await rooms.leave(ana)
    await rooms.leave(ana)  # idempotent
    assert ben_inbox.rosters() == [[ben.id]]
    await rooms.leave(ben)
    assert rooms.get("r1") is None and len(rooms) == 0 and rooms.participant_count == 0
    assert journal.events == [
        ("opened", "r1"),
        ("joined", "Ana", True),
        ("joined", "Ben", True),
        ("left", "Ana"),
        ("left", "Ben"),
        ("closed", "r1", []),
    ]


async def test_capacity_is_per_room(rooms: Rooms) -> None:
    rooms.join("r1", "a", "eng", Inbox())
    rooms.join("r1", "b", "eng", Inbox())
    with pytest.raises(RoomFull):
        rooms.join("r1", "c", "eng", Inbox())
    rooms.join("r2", "c", "eng", Inbox())
    assert rooms.participant_count == 3


async def test_language_change_reaches_mixer_source_and_everyone(rooms: Rooms) -> None:
    journal = Journal()
    rooms.add_observer(journal)
    inbox = Inbox()
    ana = rooms.join("r1", "Ana", "spa", inbox)
    rooms.set_lang(ana, "eng")
    assert (ana.lang, ana.listener.lang, ana.audio.lang) == ("eng", "eng", "eng")
    assert journal.events[-1] == ("lang", "Ana", "spa", "eng")
    assert inbox.messages[-1] == {"type": "participants", "participants": [ana.describe()]}
    rooms.remove_observer(journal)
    rooms.set_lang(ana, "fra")
    assert journal.events[-1] == ("lang", "Ana", "spa", "eng")


async def test_a_failing_observer_does_not_break_the_room(rooms: Rooms) -> None:
    class Broken(RoomObserver):
        def participant_joined(self, room: Room, participant: Participant) -> None:
            raise RuntimeError("boom")

    rooms.add_observer(Broken())
    ana = rooms.join("r1", "Ana", "eng", Inbox())
    assert rooms.get("r1") is not None and ana.room.participants == {ana.id: ana}


async def test_ids_are_unique_and_closing_releases_tasks(rooms: Rooms) -> None:
    before = asyncio.all_tasks()
    people = [rooms.join(f"room{i}", "x", "eng", Inbox()) for i in range(2)]
    people += [rooms.join("room0", "y", "eng", Inbox())]
    assert len({p.id for p in people}) == 3
    assert len(asyncio.all_tasks() - before) == 4  # a mixer and a levels task per room
    await rooms.close_all()
    assert asyncio.all_tasks() - before == set()
    assert len(rooms) == 0


async def test_encoding_counts_for_metrics(rooms: Rooms) -> None:
    ana = rooms.join("r1", "Ana", "eng", Inbox())
    rooms.join("r1", "Ben", "eng", Inbox())
    await ana.room.mixer.tick()
    assert rooms.encoding == (2, 0)  # nobody speaks: both get the shared silence packet


def statuses(inbox: Inbox) -> list[dict[str, str]]:
    return [
        {p["id"]: p["status"] for p in m["participants"]}
        for m in inbox.messages
        if m["type"] == "participants"
    ]


async def test_a_dropped_participant_is_reconnecting_then_resumes_as_themselves() -> None:
    rooms = Rooms(resume_grace=3600)
    journal = Journal()
    rooms.add_observer(journal)
    ana_inbox, ben_inbox, back_inbox = Inbox(), Inbox(), Inbox()
    ana = rooms.join("r1", "Ana", "spa", ana_inbox)
    ben = rooms.join("r1", "Ben", "eng", ben_inbox)
    ana.listener.mix.original = 0.5
    first_token, old_track = ana.resume_token, ana.listener.track

    await rooms.suspend(ana)
    assert statuses(ben_inbox)[-1] == {ana.id: "reconnecting", ben.id: "connected"}
    ana.send({"type": "caption", "text": "hola"})  # the room goes on without her
    ana.send({"type": "levels", "levels": {}})
    assert ana_inbox.messages[-1]["type"] == "participants"  # nothing reached the old socket

    assert rooms.claim("not-a-token") is None
    claimed = rooms.claim(first_token)
    assert claimed is ana and rooms.claim(first_token) is None  # one use only
    assert await rooms.resume(ana, back_inbox)
    assert ana.resume_token not in ("", first_token)
    assert (ana.lang, ana.listener.mix.original) == ("spa", 0.5)
    assert ana.listener.track is not old_track and old_track.readyState == "ended"
    assert ana.take_held() == [{"type": "caption", "text": "hola"}]
    ana.send({"type": "caption", "text": "otra"})
    assert back_inbox.messages == [{"type": "caption", "text": "otra"}]
    assert statuses(ben_inbox)[-1] == {ana.id: "connected", ben.id: "connected"}
    assert all(ana.id in roster for roster in ben_inbox.rosters())  # never a leave
    assert [event[0] for event in journal.events] == ["opened", "joined", "joined"]
    await rooms.close_all()


async def test_without_resume_the_grace_ends_in_a_normal_leave() -> None:
    rooms = Rooms(resume_grace=0.01)
    journal = Journal()
    rooms.add_observer(journal)
    ben_inbox = Inbox()
    ana = rooms.join("r1", "Ana", "spa", Inbox())
    ben = rooms.join("r1", "Ben", "eng", ben_inbox)
    token = ana.resume_token
    before = asyncio.all_tasks()
    await rooms.suspend(ana)
    grace = asyncio.all_tasks() - before
    assert [task.get_name() for task in grace] == [f"grace-{ana.id}"]
    await asyncio.gather(*grace)

    assert ben_inbox.rosters()[-1] == [ben.id]
    assert journal.events[-1] == ("left", "Ana")
    assert rooms.claim(token) is None and rooms.participant_count == 1
    await rooms.close_all()


async def test_leaving_or_closing_during_the_grace_cancels_it() -> None:
    rooms = Rooms(resume_grace=3600)
    before = asyncio.all_tasks()
    ana = rooms.join("r1", "Ana", "spa", Inbox())
    ben = rooms.join("r2", "Ben", "spa", Inbox())
    await rooms.suspend(ana)
    await rooms.suspend(ben)
    await rooms.leave(ana)
    assert rooms.claim(ana.resume_token) is None
    await rooms.close_all()
    assert asyncio.all_tasks() - before == set() and len(rooms) == 0
    await rooms.suspend(ben)  # a socket that ends after shutdown changes nothing
    assert asyncio.all_tasks() - before == set()


async def test_a_grace_of_zero_makes_a_drop_a_leave() -> None:
    rooms = Rooms(resume_grace=0)
    ana = rooms.join("r1", "Ana", "spa", Inbox())
    await rooms.suspend(ana)
    assert rooms.get("r1") is None and rooms.claim(ana.resume_token) is None


async def test_a_rejoin_while_the_last_leave_stops_the_room_keeps_the_new_room(
    rooms: Rooms,
) -> None:
    class ById(RoomObserver):
        """Keeps per-room state by id, as the live translation feature does."""

        def __init__(self) -> None:
            self.open: dict[str, Room] = {}

        def room_opened(self, room: Room) -> None:
            self.open[room.id] = room

        def room_closed(self, room: Room) -> None:
            self.open.pop(room.id, None)

    by_id = ById()
    rooms.add_observer(by_id)
    ana = rooms.join("r1", "Ana", "eng", Inbox())
    leaving = asyncio.create_task(rooms.leave(ana))
    await asyncio.sleep(0)  # the leave is now awaiting the old room's stop
    ben = rooms.join("r1", "Ben", "eng", Inbox())
    await leaving
    assert ben.room is not ana.room
    assert rooms.get("r1") is ben.room
    assert by_id.open == {"r1": ben.room}


async def test_the_spoken_language_follows_confident_detections_unless_pinned(
    rooms: Rooms,
) -> None:
    inbox = Inbox()
    ana = rooms.join("r1", "Ana", "spa", inbox)

    def detected(lang: str, seconds: float, transcript: str = "words") -> Utterance:
        utterance = Utterance(np.zeros(int(seconds * PIPELINE_RATE), np.float32), 0.0, seconds)
        utterance.source_id, utterance.source_lang = ana.id, lang
        utterance.transcript = transcript
        return utterance

    def speaks() -> tuple[str, str, str]:
        (entry,) = [m for m in inbox.messages if m["type"] == "participants"][-1]["participants"]
        return entry["speaks"], entry["speaks_from"], ana.audio.lang

    follow_spoken_language(ana.room, detected("eng", 0.6))  # "okay": too short to tell
    follow_spoken_language(ana.room, detected("eng", 2.0, transcript=" "))  # heard nothing
    assert ana.speaking == ana.audio.lang == "spa" and not inbox.messages
    follow_spoken_language(ana.room, detected("eng", 2.0))
    assert speaks() == ("eng", "detected", "eng")
    rooms.set_lang(ana, "fra")  # what she hears changes, not what she speaks
    assert speaks() == ("eng", "detected", "eng")

    ana.pin_spoken("deu")
    follow_spoken_language(ana.room, detected("ita", 2.0))  # pinned: no detection counts
    assert ana.speaking == ana.audio.lang == "deu"
    ana.pin_spoken(None)
    assert ana.speaking == ana.audio.lang == "eng"
