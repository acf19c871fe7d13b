"""Tables in a room, by hand: `set_table`, the `table` message, the roster, mixes, metrics.

The acoustic side (phones that hear one another) is in tests/test_colocated.py; here the
peers send no audio, so every table is one seated by hand.
"""

from __future__ import annotations

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer

from media.inbound import Chunk16k
from media.table import AcousticTables
from signaling.live import LiveTranslation
from signaling.rooms import Rooms
from signaling.tables import RoomTables
from tests.fixtures.live import ScriptedServerFactory, ScriptedTranslator
from tests.fixtures.webrtc import PeerFactory, TestPeer


async def roster_update(peer: TestPeer) -> dict[str, dict]:
    while (message := await peer.receive())["type"] != "participants":
        pass
    return {entry["id"]: entry for entry in message["participants"]}


async def metrics(server: TestServer) -> str:
    async with aiohttp.ClientSession() as session:
        return await (await session.get(server.make_url("/metrics"))).text()


def table_of(live: LiveTranslation, peer: TestPeer) -> frozenset[str]:
    (live_room,) = live.rooms.values()
    return live_room.room.participants[peer.id].listener.mix.table


async def test_seating_by_hand_reaches_mixes_clients_roster_and_metrics(
    scripted_server: ScriptedServerFactory, peer_factory: PeerFactory
) -> None:
    server, live = await scripted_server(ScriptedTranslator())
    dan, marek, pierre = [await peer_factory(server) for _ in range(3)]
    await dan.join("cafe", "Dan", "eng")
    await marek.join("cafe", "Marek", "ces")
    await pierre.join("cafe", "Pierre", "fra")

    await dan.send({"type": "set_table", "participant": marek.id, "together": True})
    assert await dan.expect("table") == {
        "type": "table", "members": [marek.id], "overrides": {marek.id: True},
    }
    assert await marek.expect("table") == {
        "type": "table", "members": [dan.id], "overrides": {dan.id: True},
    }
    seen_by_pierre = await roster_update(pierre)
    while "table" not in seen_by_pierre[dan.id]:
        seen_by_pierre = await roster_update(pierre)
    assert seen_by_pierre[dan.id]["table"] == [marek.id]
    assert seen_by_pierre[marek.id]["table"] == [dan.id]
    assert "table" not in seen_by_pierre[pierre.id]
    assert table_of(live, dan) == {marek.id} and table_of(live, pierre) == frozenset()
    assert "babblefish_colocated_groups 1.0" in await metrics(server)
    assert "babblefish_colocated_participants 2.0" in await metrics(server)

    await marek.send({"type": "set_table", "participant": dan.id, "together": False})
    assert await marek.expect("table") == {
        "type": "table", "members": [], "overrides": {dan.id: False},
    }
    assert (await dan.expect("table"))["members"] == []
    await marek.send({"type": "set_table", "participant": dan.id, "together": None})
    assert await marek.expect("table") == {"type": "table", "members": [], "overrides": {}}
    assert table_of(live, dan) == frozenset() and table_of(live, marek) == frozenset()

    await pierre.send({"type": "set_table", "participant": marek.id, "together": True})
    assert (await marek.expect("table"))["members"] == [pierre.id]
    await pierre.close()  # leaving the table unseats Marek at once
    assert await marek.expect("table") == {"type": "table", "members": [], "overrides": {}}
    assert "babblefish_colocated_groups 0.0" in await metrics(server)


async def test_set_table_is_validated(
    scripted_server: ScriptedServerFactory, peer_factory: PeerFactory
) -> None:
    server, _ = await scripted_server(ScriptedTranslator())
    dan, marek = [await peer_factory(server) for _ in range(2)]
    await dan.join("cafe", "Dan", "eng")
    await marek.join("cafe", "Marek", "ces")
    for message, code in (
        ({"participant": "p00000000", "together": True}, "unknown_participant"),
        ({"participant": dan.id, "together": True}, "bad_field"),
        ({"participant": marek.id, "together": "yes"}, "bad_field"),
        ({"participant": marek.id}, "bad_field"),
        ({"participant": 7, "together": None}, "bad_field"),
    ):
        await dan.send({"type": "set_table", **message})
        error = await dan.expect("error")
        assert error["code"] == code, (message, error)
    await dan.send({"type": "set_table", "participant": marek.id, "together": None})
    assert await dan.expect("table") == {"type": "table", "members": [], "overrides": {}}


class FailingTables(AcousticTables):
    """The real tables, with a microphone step that crashes (a DSP bug)."""

    def mic(self, pid: str, chunk: Chunk16k) -> list[Chunk16k]:
        raise RuntimeError("dsp bug")


async def test_a_table_failure_passes_that_microphone_through_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rooms = Rooms()
    ann = rooms.join("r", "Ann", "eng", lambda message: None)
    tables = RoomTables(ann.room, FailingTables())
    tables.add(ann)
    chunk = Chunk16k(np.zeros(320, np.float32), 0.0, 0.0)
    try:
        assert await tables.clean(ann, chunk) == [chunk]
        assert await tables.clean(ann, chunk) == [chunk]  # no second attempt, no second log
        failures = [r for r in caplog.records if "acoustic tables failed" in r.getMessage()]
        assert len(failures) == 1 and ann.id in failures[0].getMessage()
    finally:
        tables.close()
        await rooms.close_all()
