"""Server limits, each with its documented error, and the edge defects a probe found:
non-readers, shutdown closes, malformed HTTP in the log."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from signaling.handlers import core_messages
from signaling.messages import ErrorCode, Message, MessageRegistry
from signaling.session import Session, SessionLimits
from tests.fixtures.server import ServerFactory, signaling_of
from tests.fixtures.webrtc import PeerFactory
from tests.test_access import rest_server
from tests.test_bad_input import eventually, expect_error, server_is_idle


async def test_sockets_per_address_are_limited(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    server = await babblefish_factory(limits=SessionLimits(sockets_per_address=2))
    first, second, third = [await peer_factory(server) for _ in range(3)]
    await expect_error(third, ErrorCode.TOO_MANY_SOCKETS)
    assert await third.closed() == (1008, ErrorCode.TOO_MANY_SOCKETS)
    await first.join("r", "Ana", "eng")
    await second.join("r", "Bo", "eng")
    await first.close()
    await eventually(lambda: len(signaling_of(server).sessions) == 1)
    fourth = await peer_factory(server)  # a freed slot is usable again
    await fourth.join("r", "Cy", "eng")


async def test_a_socket_the_server_closed_is_released_at_once(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    """Nothing of a socket the server closed (refused, or after `leave`) outlives the
    connection: no timer keeps it, so 1,000 refused sockets cost nothing once gone."""
    server = await babblefish_factory(limits=SessionLimits(sockets_per_address=1))
    member = await peer_factory(server)
    await member.join("r", "Ana", "eng")
    refused = await peer_factory(server)
    assert await refused.closed() == (1008, ErrorCode.TOO_MANY_SOCKETS)
    connections = server.runner.server  # type: ignore[union-attr]
    await eventually(lambda: len(connections.connections) == 1)
    assert live_websockets() == 1  # the member's

    await member.send({"type": "leave"})
    assert (await member.closed())[0] == 1000
    await eventually(lambda: not connections.connections)
    assert live_websockets() == 0


def live_websockets() -> int:
    gc.collect()
    # type(), not isinstance(): some objects (numpy's npz BagObj) raise on `__class__`.
    return sum(issubclass(type(thing), web.WebSocketResponse) for thing in gc.get_objects())


async def test_rooms_per_server_are_limited(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    server = await babblefish_factory(max_rooms=1)
    ana, bo = await peer_factory(server), await peer_factory(server)
    await ana.join("first", "Ana", "eng")
    await bo.send({"type": "join", "room": "second", "name": "Bo", "lang": "eng"})
    await expect_error(bo, ErrorCode.TOO_MANY_ROOMS)
    await bo.join("first", "Bo", "eng")  # recoverable: an open room still takes people
    assert len(signaling_of(server).rooms) == 1


async def test_a_socket_that_never_joins_is_closed(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    server = await babblefish_factory(limits=SessionLimits(join_timeout=0.3))
    member = await peer_factory(server)
    await member.join("r", "Ana", "eng")
    lurker = await peer_factory(server)
    await expect_error(lurker, ErrorCode.JOIN_TIMEOUT)
    assert await lurker.closed() == (1008, ErrorCode.JOIN_TIMEOUT)
    await eventually(lambda: len(signaling_of(server).sessions) == 1)
    # The member's own deadline passed too; having joined, it stays.
    assert not member.ws.closed and signaling_of(server).rooms.participant_count == 1


async def test_rest_concurrency_and_body_size_are_limited(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    reached: list[str] = []
    release = asyncio.Event()
    server = await rest_server(
        aiohttp_server, reached, rest_concurrency=1, max_upload_bytes=1000, release=release
    )
    url = server.make_url("/translate")
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=b"x" * 2000) as big:
            assert big.status == 413 and (await big.json())["error"]["code"] == "too_large"
        assert reached == []
        slow = asyncio.create_task(http.post(url, json={}))
        await eventually(lambda: reached == ["/translate"])
        async with http.post(url, json={}) as busy:
            assert busy.status == 503 and busy.headers["Retry-After"] == "1"
            assert (await busy.json())["error"]["code"] == "busy"
        release.set()
        async with await slow as done:
            assert done.status == 200
        async with http.post(url, json={}) as again:
            assert again.status == 200


def flooding_messages() -> MessageRegistry:
    """The core protocol plus `flood`, which queues `count` large messages for everyone
    else in the sender's room: a busy room's updates, faster than any socket drains."""
    registry = core_messages()

    async def flood(session: Session, message: Message) -> None:
        assert session.participant is not None
        others = [p for p in session.participant.room.participants.values()]
        for _ in range(message["count"]):
            for participant in others:
                if participant is not session.participant:
                    participant.send({"type": "levels", "pad": "x" * 60_000})

    registry.register("flood", flood, {"count": int})
    return registry


async def frames_until_close(ws: aiohttp.ClientWebSocketResponse) -> tuple[int, aiohttp.WSMessage]:
    count = 0
    while (frame := await ws.receive()).type == aiohttp.WSMsgType.TEXT:
        count += 1
    return count, frame


async def test_a_client_that_stops_reading_leaves_the_room_and_gets_1008(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    server = await babblefish_factory(messages=flooding_messages())
    watcher = await peer_factory(server)
    await watcher.join("r", "Watcher", "eng")
    async with aiohttp.ClientSession() as http:
        # aiohttp stops reading the socket once 64 KiB wait unread: a client that does
        # not read, while its TCP connection lives on.
        sleeper = await http.ws_connect(server.make_url("/ws"))
        await sleeper.send_json({"type": "join", "room": "r", "name": "Sleeper", "lang": "eng"})
        await eventually(lambda: signaling_of(server).rooms.participant_count == 2)
        await watcher.send({"type": "flood", "count": 400})

        room = signaling_of(server).rooms.get("r")
        await eventually(lambda: [p.name for p in room.participants.values()] == ["Watcher"])
        while [p["name"] for p in (await watcher.expect("participants"))["participants"]] != [
            "Watcher"
        ]:
            pass

        # When it reads again it finds the documented close after what was on the wire.
        count, frame = await frames_until_close(sleeper)
        assert frame.type == aiohttp.WSMsgType.CLOSE, frame
        assert (frame.data, frame.extra) == (1008, "not reading")
        assert count < 256, "the close waited behind the backlog"
    await watcher.close()
    await eventually(server_is_idle(server))


async def test_a_client_that_never_reads_again_is_cut_off_after_the_close_timeout(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    server = await babblefish_factory(
        messages=flooding_messages(), limits=SessionLimits(close_timeout=0.2)
    )
    watcher = await peer_factory(server)
    await watcher.join("r", "Watcher", "eng")
    async with aiohttp.ClientSession() as http:
        sleeper = await http.ws_connect(server.make_url("/ws"))
        await sleeper.send_json({"type": "join", "room": "r", "name": "Sleeper", "lang": "eng"})
        await eventually(lambda: signaling_of(server).rooms.participant_count == 2)
        assert len(server.runner.server.connections) == 2  # type: ignore[union-attr]
        # First its buffers fill and the server's writer waits on them; then it overflows.
        await watcher.send({"type": "flood", "count": 200})
        sessions = signaling_of(server).sessions
        await eventually(lambda: any(s._outbox.qsize() > 100 for s in sessions))
        await watcher.send({"type": "flood", "count": 200})
        await eventually(lambda: len(signaling_of(server).sessions) == 1)
        # Its connection is released too, though it never read what was sent to it.
        await eventually(lambda: len(server.runner.server.connections) == 1)  # type: ignore[union-attr]


async def test_shutdown_sends_1001_to_every_socket_even_a_backlogged_one(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    server = await babblefish_factory(messages=flooding_messages(), limits=SessionLimits())
    peers = [await peer_factory(server) for _ in range(24)]
    for number, peer in enumerate(peers[:16]):
        await peer.join("room0" if number < 2 else f"room{number % 3}", f"P{number}", "eng")
    async with aiohttp.ClientSession() as http:
        # A client that reads, but slowly: the server holds a backlog for it at shutdown.
        slow = await http.ws_connect(server.make_url("/ws"))
        await slow.send_json({"type": "join", "room": "room0", "name": "Slow", "lang": "eng"})
        await eventually(lambda: signaling_of(server).rooms.participant_count == 17)
        await peers[0].send({"type": "flood", "count": 250})  # under the outbox's 256
        await eventually(
            lambda: any(s._outbox.qsize() > 100 for s in signaling_of(server).sessions)
        )
        closing = asyncio.create_task(server.close())
        for peer in peers:
            assert await peer.closed() == (1001, "shutdown")
        count, frame = await frames_until_close(slow)
        assert (frame.data, frame.extra) == (1001, "shutdown")
        assert count < 250, "the close waited behind the backlog"
        await closing


async def test_malformed_http_requests_log_one_short_line_each(
    babblefish: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    requests = [
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16_384 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(200))
        + b"\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ]
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    for raw in requests:
        reader, writer = await asyncio.open_connection(babblefish.host, babblefish.port)
        writer.write(raw)
        status = await reader.readline()
        assert status.split()[1] in (b"400", b"431"), status
        writer.close()
    server_lines = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(server_lines) == len(requests)
    for record in server_lines:
        assert record.levelno < logging.WARNING and record.exc_info is None
        assert "\n" not in record.getMessage() and len(record.getMessage()) < 250
