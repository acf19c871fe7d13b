"""The aiohttp application: client page, `/ws` signaling, `/health`, `/languages`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import WSCloseCode, web
from aiortc import RTCIceServer

from media.ice import browser_ice_server, offer_host_addresses
from media.peer import ICE_CONNECT_TIMEOUT, PeerConnections
from signaling.access import Access
from signaling.handlers import core_messages
from signaling.http_log import quiet_malformed_requests
from signaling.invite import add_invite_routes
from signaling.languages import LanguageSource, table_languages
from signaling.memory import TRIM_INTERVAL_SECONDS, running_allocator, trim_memory_periodically
from signaling.messages import ErrorCode, MessageRegistry
from signaling.rooms import RESUME_GRACE_SECONDS, Rooms
from signaling.session import Session, SessionLimits, Signaling

log = logging.getLogger(__name__)

CLIENT_DIR = Path(__file__).resolve().parent.parent / "client"

HEARTBEAT_SECONDS = 5.0
"""WebSocket ping interval; a client silent for half of it after a ping is dropped, so a
vanished peer leaves its room within seconds even if its TCP connection lingers."""

MIXER_THREADS = 2
"""Threads that mix and encode for every room. Opus encoding holds the GIL only in part,
and a host this size rarely has more cores to give to it."""

SHUTDOWN_GRACE_SECONDS = 3.0
"""How long shutdown waits for sockets to finish their 1001 close handshake; within the
runner's 5 s shutdown timeout, after which aiohttp cancels what is left."""

MAX_UPLOAD_BYTES = 25 * 2**20
"""REST bodies (audio files for /transcribe) above this are refused with 413."""

SIGNALING = web.AppKey("signaling", Signaling)
STARTED = web.AppKey("started", float)
ALLOCATOR = web.AppKey("allocator", str)


@dataclass
class ServerSettings:
    """What the web app needs; `app.Settings` extends it with how the server is run."""

    max_participants: int = 50
    ice_servers: list[RTCIceServer] = field(default_factory=list)
    ice_addresses: list[str] | None = None
    """Host candidate addresses to offer; None lets aioice pick the interfaces."""
    client_dir: Path = CLIENT_DIR
    limits: SessionLimits = field(default_factory=SessionLimits)
    resume_grace: float = RESUME_GRACE_SECONDS
    """Seconds a dropped participant may `resume`; 0 makes every drop a leave."""
    ice_timeout: float = ICE_CONNECT_TIMEOUT
    """Seconds an answered offer may take to connect before its peer connection is released."""
    access_token: str | None = None
    """When set, `/ws` and the REST face require it (see docs/protocol.md, Access)."""
    allowed_origins: list[str] = field(default_factory=list)
    """Page origins besides the server's own that may open WebSockets."""
    trusted_proxies: list[str] = field(default_factory=list)
    """Reverse proxies (addresses or networks) whose X-Forwarded-For names the client."""
    max_rooms: int = 100
    rest_concurrency: int = 4
    """REST requests served at once; more get 503 `busy`. They share the engines with
    live rooms, so a few at a time keep the rooms' latency."""
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    memory_trim_interval: float = TRIM_INTERVAL_SECONDS
    """Seconds between returns of the allocator's free memory to the system."""


SETTINGS = web.AppKey("settings", ServerSettings)


def create_app(
    settings: ServerSettings,
    *,
    languages: LanguageSource = table_languages,
    messages: MessageRegistry | None = None,
) -> web.Application:
    """The whole server. `languages` reports capabilities (engines may pass a live source);
    `messages` lets features add message types (default: the core protocol)."""
    offer_host_addresses(settings.ice_addresses)
    quiet_malformed_requests()
    mixing = ThreadPoolExecutor(MIXER_THREADS, thread_name_prefix="mixer")
    access = Access(
        settings.access_token,
        tuple(settings.allowed_origins),
        trusted_proxies=tuple(settings.trusted_proxies),
    )
    app = web.Application(
        middlewares=[
            access.rest_middleware(),
            _rest_limits(settings.rest_concurrency, settings.max_upload_bytes),
        ],
        client_max_size=settings.max_upload_bytes,
    )
    app[SETTINGS] = settings
    app[SIGNALING] = Signaling(
        access=access,
        rooms=Rooms(
            settings.max_participants,
            executor=mixing,
            max_rooms=settings.max_rooms,
            resume_grace=settings.resume_grace,
        ),
        peers=PeerConnections(settings.ice_servers, settings.ice_timeout),
        messages=messages or core_messages(),
        languages=languages,
        ice_servers=[browser_ice_server(server) for server in settings.ice_servers],
        limits=settings.limits,
    )
    app[STARTED] = time.monotonic()
    app[ALLOCATOR] = running_allocator()

    async def shutdown(app: web.Application) -> None:
        signaling = app[SIGNALING]
        for session in list(signaling.sessions):
            session.shut_down()
        # Each socket gets its 1001 before aiohttp's own shutdown cancels the handlers.
        await _closed(signaling, SHUTDOWN_GRACE_SECONDS)
        await signaling.rooms.close_all()
        await signaling.peers.close_all()

    async def stop_mixing(app: web.Application) -> None:
        mixing.shutdown(wait=True)

    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(stop_mixing)
    app.cleanup_ctx.append(
        trim_memory_periodically(
            settings.memory_trim_interval, lambda: len(app[SIGNALING].rooms) > 0
        )
    )
    app.router.add_get("/ws", websocket)
    app.router.add_get("/health", health)
    app.router.add_get("/languages", list_languages)
    add_invite_routes(app)
    _serve_client(app, settings.client_dir)
    return app


async def _closed(signaling: Signaling, grace: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            for session in list(signaling.sessions):
                await session.finished.wait()


async def websocket(request: web.Request) -> web.WebSocketResponse:
    signaling = request.app[SIGNALING]
    if not signaling.access.origin_allowed(request):
        # A page on another site must not use the visitor's browser to join rooms.
        raise web.HTTPForbidden(
            text=f"{ErrorCode.BAD_ORIGIN}: WebSockets from {request.headers['Origin']} are "
            "not allowed (see --allowed-origin)"
        )
    # aiohttp itself refuses frames far over the limit; the session answers the rest with
    # a `too_large` error before closing.
    ws = _WebSocket(
        heartbeat=HEARTBEAT_SECONDS,
        max_msg_size=4 * signaling.limits.max_message_bytes,
    )
    await ws.prepare(request)
    address = signaling.access.client_address(request)
    limit = signaling.limits.sockets_per_address
    if signaling.sockets_from(address) >= limit:
        await ws.send_json(
            {
                "type": "error",
                "code": ErrorCode.TOO_MANY_SOCKETS,
                "message": f"at most {limit} WebSockets from one address",
            }
        )
        await ws.close(
            code=WSCloseCode.POLICY_VIOLATION, message=ErrorCode.TOO_MANY_SOCKETS.encode()
        )
        return ws
    session = Session(ws, signaling, address)
    signaling.sessions.add(session)
    try:
        await session.run()
    finally:
        signaling.sessions.discard(session)
        transport = request.transport
        if transport is not None and transport.get_write_buffer_size():
            # The close frame is still queued behind unread data. A slow reader gets it
            # in time; one that reads nothing would hold the connection and its buffer
            # forever (a closing transport waits to flush), so it is cut off.
            asyncio.get_running_loop().call_later(
                signaling.limits.close_timeout, _cut_off_if_unread, transport
            )
    return ws


class _WebSocket(web.WebSocketResponse):
    """aiohttp (3.14) re-arms the heartbeat timer when the client's reply to our close
    frame arrives, after it was cancelled on close. The timer then keeps the whole
    connection (request, parser, buffers) alive for another 5-7.5 s after the socket is
    gone: 1,000 refused sockets meant 1,000 dead connections held at once, and the
    allocator kept the memory after they went (bench/soak.py)."""

    def _reset_heartbeat(self) -> None:
        if not self.closed:
            super()._reset_heartbeat()


def _cut_off_if_unread(transport: asyncio.BaseTransport) -> None:
    if isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size():
        transport.abort()


def _rest_limits(concurrency: int, max_body: int) -> Callable[..., Awaitable[web.StreamResponse]]:
    """REST requests (anything but GET and HEAD): a body declared over `max_body` gets 413
    before it is read, and at most `concurrency` run at once; the next gets 503 `busy` at
    once rather than a place in an unbounded queue."""
    running = 0

    @web.middleware
    async def bounded(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        nonlocal running
        if request.method in ("GET", "HEAD"):
            return await handler(request)
        if request.content_length is not None and request.content_length > max_body:
            return _rest_error(413, "too_large", f"request body over {max_body} bytes")
        if running >= concurrency:
            return _rest_error(503, "busy", f"{concurrency} requests are running; retry")
        running += 1
        try:
            return await handler(request)
        finally:
            running -= 1

    return bounded


def _rest_error(status: int, code: str, message: str) -> web.Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


async def health(request: web.Request) -> web.Response:
    signaling = request.app[SIGNALING]
    rooms = signaling.rooms
    return web.json_response(
        {
            "status": "ok",
            "uptime": round(time.monotonic() - request.app[STARTED], 3),
            "rooms": len(rooms),
            "participants": rooms.participant_count,
            # For leak checks (bench/soak.py): each falls back to its idle value.
            "sockets": len(signaling.sessions),
            "peer_connections": len(signaling.peers),
            "tasks": len(asyncio.all_tasks()),
            "mixers": rooms.mixer_totals(),
            "allocator": request.app[ALLOCATOR],
            **_python_heap(),
        }
    )


def _python_heap() -> dict[str, int]:
    """Under `python -X tracemalloc`, the bytes Python's own objects hold: a process whose
    RSS grows while this does not keeps allocator pages or C memory, not Python objects."""
    if not tracemalloc.is_tracing():
        return {}
    return {"python_heap_bytes": tracemalloc.get_traced_memory()[0]}


async def list_languages(request: web.Request) -> web.Response:
    infos = request.app[SIGNALING].languages()
    return web.json_response({"languages": [info.to_json() for info in infos]})


def _serve_client(app: web.Application, client_dir: Path) -> None:
    index = client_dir / "index.html"

    async def page(request: web.Request) -> web.StreamResponse:
        if not index.is_file():
            raise web.HTTPNotFound(text=f"client page not found at {index}")
        return web.FileResponse(index)

    app.router.add_get("/", page)
    if client_dir.is_dir():
        app.router.add_static("/", client_dir)
    else:
        log.warning("client directory %s does not exist; only the API is served", client_dir)
