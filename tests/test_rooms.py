"""Rooms: lifecycle, capacity, language changes, roster broadcasts and observer hooks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

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
