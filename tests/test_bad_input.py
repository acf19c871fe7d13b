"""Every protocol error through a real server; afterwards it still works and nothing leaks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from aiohttp.test_utils import TestServer
from aiortc import RTCConfiguration, RTCPeerConnection

from signaling.messages import ErrorCode
from tests.fixtures.server import ServerFactory, signaling_of
from tests.fixtures.webrtc import PeerFactory, TestPeer


async def eventually(condition: Callable[[], bool]) -> None:
    """Waits for a condition the server reaches on its own (bounded only against hangs)."""
    for _ in range(400):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never became true")


async def expect_error(peer: TestPeer, code: str) -> dict[str, object]:
    error = await peer.expect("error")
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return error


async def a_real_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def server_is_idle(server: TestServer) -> Callable[[], bool]:
    signaling = signaling_of(server)
    return lambda: not signaling.sessions and not len(signaling.rooms) and not len(signaling.peers)


async def test_recoverable_errors_keep_the_socket_and_lose_nothing(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    server = await babblefish_factory(max_participants=2)
    tasks_before = asyncio.all_tasks()
    peer = await peer_factory(server)

    await peer.send_raw("{nope")
    await expect_error(peer, ErrorCode.BAD_JSON)
    await peer.send_raw(b"\x00\x01")
    await expect_error(peer, ErrorCode.BAD_JSON)
    await peer.send({"type": "dance"})
    await expect_error(peer, ErrorCode.UNKNOWN_TYPE)
    await peer.send({"type": "offer", "sdp": await a_real_offer()})
    await expect_error(peer, ErrorCode.NOT_JOINED)
    await peer.send({"type": "set_lang", "lang": "eng"})
    await expect_error(peer, ErrorCode.NOT_JOINED)
    await peer.send({"type": "join", "room": "no spaces", "name": "Ana", "lang": "eng"})
    await expect_error(peer, ErrorCode.BAD_FIELD)
    await peer.send({"type": "join", "room": "r", "name": "Ana", "lang": "klingon"})
    await expect_error(peer, ErrorCode.UNKNOWN_LANG)
    await peer.send({"type": "join", "room": "r", "name": "Ana", "lang": "oci"})  # heard only
    await expect_error(peer, ErrorCode.UNKNOWN_LANG)

    joined = await peer.join("r", "Ana", "eng")
    assert joined["participants"] == [
        {"id": peer.id, "name": "Ana", "lang": "eng", "speaks": "eng", "speaks_from": "assumed",
         "status": "connected"}
    ]
    assert joined["ice_servers"] == []
    await peer.send({"type": "join", "room": "r2", "name": "Ana", "lang": "eng"})
    await expect_error(peer, ErrorCode.ALREADY_JOINED)
    await peer.send({"type": "set_lang", "lang": "klingon"})
    await expect_error(peer, ErrorCode.UNKNOWN_LANG)
    await peer.send({"type": "offer", "sdp": "v=0\r\nthis is not sdp"})
    await expect_error(peer, ErrorCode.BAD_SDP)
    video = (await a_real_offer()).replace("m=audio", "m=video")
    await peer.send({"type": "offer", "sdp": video})
    await expect_error(peer, ErrorCode.BAD_SDP)
    assert len(signaling_of(server).peers) == 0  # rejected offers leave no connection

    await peer.connect()  # a good offer still works after the bad ones
    await peer.send({"type": "offer", "sdp": await a_real_offer()})
    await expect_error(peer, ErrorCode.RENEGOTIATION_UNSUPPORTED)

    second, third = await peer_factory(server), await peer_factory(server)
    await second.join("r", "Ben", "spa")
    await third.send({"type": "join", "room": "r", "name": "Cy", "lang": "eng"})
    await expect_error(third, ErrorCode.ROOM_FULL)
    await third.join("other", "Cy", "eng")  # the server serves other rooms meanwhile
    await third.connect()

    await peer.send({"type": "set_lang", "lang": "spa"})
    ana_now = {"id": peer.id, "name": "Ana", "lang": "spa", "speaks": "spa",
               "speaks_from": "assumed", "status": "connected"}
    while ana_now not in (await peer.expect("participants"))["participants"]:
        pass  # earlier roster updates (Ben joining) come first
    await peer.send({"type": "leave"})
    assert await peer.closed() == (1000, "left")

    for client in (peer, second, third):
        await client.close()
    await eventually(server_is_idle(server))
    await eventually(lambda: asyncio.all_tasks() - tasks_before == set())


async def test_oversized_frame_closes_the_socket(
    babblefish: TestServer, peer_factory: PeerFactory
) -> None:
    peer = await peer_factory(babblefish)
    await peer.join("r", "Ana", "eng")
    await peer.send_raw(json.dumps({"type": "leave", "pad": "x" * 70_000}))
    await expect_error(peer, ErrorCode.TOO_LARGE)
    assert await peer.closed() == (1009, ErrorCode.TOO_LARGE)
    await eventually(server_is_idle(babblefish))


async def test_flood_is_rate_limited_and_closed(
    babblefish: TestServer, peer_factory: PeerFactory
) -> None:
    peer = await peer_factory(babblefish)
    for _ in range(100):
        await peer.send({"type": "dance"})
    codes = []
    while True:
        message = await peer.next_frame()
        if message.type.name != "TEXT":
            break
        codes.append(json.loads(message.data)["code"])
    assert codes[-1] == ErrorCode.RATE_LIMITED
    assert set(codes[:-1]) == {ErrorCode.UNKNOWN_TYPE}
    assert peer.ws.close_code == 1008
    await eventually(server_is_idle(babblefish))


async def test_a_vanished_peer_is_removed_and_released(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    """Without a grace period to resume in (tests/test_reconnect.py has one), at once."""
    babblefish = await babblefish_factory(resume_grace=0)
    signaling = signaling_of(babblefish)
    stays, leaves_ws, leaves_media = [await peer_factory(babblefish) for _ in range(3)]
    for name, peer in (("Stays", stays), ("Gone", leaves_ws), ("Mute", leaves_media)):
        await peer.join("r", name, "eng")
        await peer.connect()
    assert len(signaling.peers) == 3

    await leaves_ws.ws.close()  # the page is closed: the socket goes first
    assert leaves_media.pc is not None
    await leaves_media.pc.close()  # the media dies while the socket stays open
    await expect_error(leaves_media, ErrorCode.ICE_FAILED)
    assert await leaves_media.closed() == (4001, ErrorCode.ICE_FAILED)

    room = signaling.rooms.get("r")
    await eventually(lambda: list(room.participants) == [stays.id])
    await eventually(lambda: len(signaling.peers) == 1)
    assert [listener.id for listener in room.mixer.listeners] == [stays.id]
    assert list(room.mixer.sources) == [stays.id]
    while [p["id"] for p in (await stays.expect("participants"))["participants"]] != [stays.id]:
        pass  # the roster updates arrive in order; the last one has only Stays


async def test_shutdown_closes_every_socket_and_peer(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    server = await babblefish_factory()
    peer = await peer_factory(server)
    await peer.join("r", "Ana", "eng")
    await peer.connect()
    signaling = signaling_of(server)
    await server.close()
    assert await peer.closed() == (1001, "shutdown")
    assert len(signaling.peers) == 0 and len(signaling.rooms) == 0 and not signaling.sessions
