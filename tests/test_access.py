"""The operator token, room passcodes, the guessing backoff and the WebSocket Origin check,
through real servers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from signaling.access import FREE_FAILURES, MAX_WAIT_SECONDS, FailureBackoff
from signaling.messages import ErrorCode
from signaling.session import SessionLimits
from signaling.web import ServerSettings, create_app
from tests.fixtures.server import ServerFactory, signaling_of
from tests.fixtures.webrtc import PeerFactory, TestPeer
from tests.test_bad_input import expect_error

TOKEN = "s3cret-operator-token"


def join(room: str = "r", name: str = "Ana", **extra: str) -> dict[str, str]:
    return {"type": "join", "room": room, "name": name, "lang": "eng", **extra}


async def joined(peer: TestPeer, message: dict[str, str]) -> dict[str, object]:
    await peer.send(message)
    reply = await peer.expect("joined")
    peer.id = str(reply["id"])
    return reply


async def test_with_a_token_the_socket_serves_only_whoever_gives_it(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    server = await babblefish_factory(access_token=TOKEN)
    peer = await peer_factory(server)

    await peer.send(join())
    await expect_error(peer, ErrorCode.UNAUTHORIZED)
    await peer.send(join(access_token="guess"))
    await expect_error(peer, ErrorCode.UNAUTHORIZED)
    await peer.send(join(token=TOKEN))  # `token` is another secret's field (resume)
    await expect_error(peer, ErrorCode.UNAUTHORIZED)
    await peer.send({"type": "offer", "sdp": "v=0"})  # nothing else is heard meanwhile
    await expect_error(peer, ErrorCode.UNAUTHORIZED)
    assert len(signaling_of(server).rooms) == 0

    await joined(peer, join(access_token=TOKEN))
    assert signaling_of(server).rooms.participant_count == 1


async def test_without_a_token_setting_the_server_stays_open(
    babblefish: TestServer, peer_factory: PeerFactory
) -> None:
    peer = await peer_factory(babblefish)
    await joined(peer, join())


async def rest_server(
    aiohttp_server: Callable[..., Awaitable[TestServer]], reached: list[str], **settings: Any
) -> TestServer:
    """A server whose POST /translate stands for the REST face (the real routes need the
    engines; the access and limit rules apply to every such route alike)."""
    release = settings.pop("release", None)

    async def expensive(request: web.Request) -> web.Response:
        reached.append(request.path)
        if release is not None:
            await release.wait()
        return web.json_response({"ok": True})

    app = create_app(ServerSettings(**settings))
    app.router.add_post("/translate", expensive)
    app.router.add_get("/metrics", expensive)
    return await aiohttp_server(app)


async def test_rest_needs_a_bearer_token_and_the_page_stays_public(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> None:
    reached: list[str] = []
    server = await rest_server(aiohttp_server, reached, access_token=TOKEN)

    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
            async with http.post(server.make_url("/translate"), json={}, headers=headers) as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
                assert (await r.json())["error"]["code"] == ErrorCode.UNAUTHORIZED
        assert reached == []
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with http.post(server.make_url("/translate"), json={}, headers=headers) as r:
            assert r.status == 200
        assert reached == ["/translate"]
        async with http.get(server.make_url("/metrics")) as r:
            assert r.status == 401
        async with http.get(server.make_url("/metrics"), headers=headers) as r:
            assert r.status == 200
        for public in ("/", "/health", "/languages"):
            async with http.get(server.make_url(public)) as r:
                assert r.status == 200, public


def test_backoff_lets_a_few_typos_pass_then_doubles_the_wait() -> None:
    now = [100.0]
    backoff = FailureBackoff(clock=lambda: now[0])
    for _ in range(FREE_FAILURES):
        assert backoff.wait("a") == 0
        backoff.failed("a")
    assert backoff.wait("a") == 0
    backoff.failed("a")
    assert backoff.wait("a") == 1.0 and backoff.wait("b") == 0
    now[0] += 1.0
    backoff.failed("a")
    assert backoff.wait("a") == 2.0
    for _ in range(30):
        backoff.failed("a")
    assert backoff.wait("a") == MAX_WAIT_SECONDS
    backoff.succeeded("a")
    assert backoff.wait("a") == 0


async def test_repeated_wrong_guesses_from_one_address_must_wait(
    babblefish_factory: ServerFactory, peer_factory: PeerFactory
) -> None:
    server = await babblefish_factory(access_token=TOKEN)
    peer = await peer_factory(server)
    for _ in range(FREE_FAILURES + 2):  # not knowing a token is needed is no guess
        await peer.send(join())
        await expect_error(peer, ErrorCode.UNAUTHORIZED)
    for attempt in range(FREE_FAILURES + 1):
        await peer.send(join(access_token=f"guess-{attempt}"))
        await expect_error(peer, ErrorCode.UNAUTHORIZED)
    await peer.send(join(access_token=TOKEN))  # even the right token waits its turn
    error = await expect_error(peer, ErrorCode.RETRY_LATER)
    assert error["retry_after"] == 1

    async with aiohttp.ClientSession() as http:
        async with http.post(server.make_url("/translate"), json={}) as reply:
            assert reply.status == 429 and reply.headers["Retry-After"] == "1"
            assert (await reply.json())["error"]["code"] == ErrorCode.RETRY_LATER


async def test_whoever_opens_a_room_may_lock_it_with_a_passcode(
    babblefish: TestServer, peer_factory: PeerFactory
) -> None:
    host, guest, other = [await peer_factory(babblefish) for _ in range(3)]
    assert (await joined(host, join("locked", "Host", passcode="tea for two")))["locked"] is True

    await guest.send(join("locked", "Guest"))
    await expect_error(guest, ErrorCode.WRONG_PASSCODE)
    await guest.send(join("locked", "Guest", passcode="tea for one"))
    await expect_error(guest, ErrorCode.WRONG_PASSCODE)
    room = signaling_of(babblefish).rooms.get("locked")
    assert [p.name for p in room.participants.values()] == ["Host"]

    assert (await joined(guest, join("locked", "Guest", passcode="tea for two")))["locked"]
    assert (await joined(other, join("open", "Other")))["locked"] is False


async def test_a_passcode_field_is_checked_like_any_field(
    babblefish: TestServer, peer_factory: PeerFactory
) -> None:
    peer = await peer_factory(babblefish)
    await peer.send(join(passcode=""))
    await expect_error(peer, ErrorCode.BAD_FIELD)


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser
        ("SAME", True),
        ("https://meet.example.org", True),
        ("https://evil.example", False),
        ("null", False),
    ],
)
async def test_sockets_are_opened_only_from_allowed_origins(
    babblefish_factory: ServerFactory, origin: str | None, allowed: bool
) -> None:
    server = await babblefish_factory(allowed_origins=["https://meet.example.org"])
    if origin == "SAME":
        origin = f"http://{server.host}:{server.port}"
    headers = {"Origin": origin} if origin else {}
    async with aiohttp.ClientSession() as http:
        if not allowed:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(server.make_url("/ws"), headers=headers)
            assert refused.value.status == 403
            assert not signaling_of(server).sessions
            return
        async with http.ws_connect(server.make_url("/ws"), headers=headers) as ws:
            await ws.send_json(join())
            assert (await ws.receive_json())["type"] == "joined"


async def test_behind_a_trusted_proxy_each_forwarded_client_counts_on_its_own(
    babblefish_factory: ServerFactory,
) -> None:
    """The test client is the proxy (127.0.0.1); X-Forwarded-For names who it serves."""
    one_each = SessionLimits(sockets_per_address=1)
    proxied = await babblefish_factory(limits=one_each, trusted_proxies=["127.0.0.0/8"])
    direct = await babblefish_factory(limits=one_each)
    held: list[aiohttp.ClientWebSocketResponse] = []  # each socket stays open until the end
    async with aiohttp.ClientSession() as http:

        async def first_reply(server: TestServer, forwarded_for: str) -> dict[str, Any]:
            ws = await http.ws_connect(
                server.make_url("/ws"), headers={"X-Forwarded-For": forwarded_for}
            )
            held.append(ws)
            await ws.send_json({"type": "join", "room": "r", "name": "n", "lang": "eng"})
            reply: dict[str, Any] = await ws.receive_json(timeout=10)
            return reply

        assert (await first_reply(proxied, "203.0.113.5"))["type"] == "joined"
        assert (await first_reply(proxied, "198.51.100.7"))["type"] == "joined"
        # What a client writes itself comes first; the proxy appends whom it saw.
        spoofed = await first_reply(proxied, "192.0.2.99, 203.0.113.5")
        assert spoofed["code"] == ErrorCode.TOO_MANY_SOCKETS
        signaling = signaling_of(proxied)
        assert sorted(session.address for session in signaling.sessions) == [
            "198.51.100.7", "203.0.113.5"
        ]

        # An untrusted peer's header is its own claim: it counts as its own address.
        assert (await first_reply(direct, "203.0.113.5"))["type"] == "joined"
        refused = await first_reply(direct, "198.51.100.7")
        assert refused["code"] == ErrorCode.TOO_MANY_SOCKETS
