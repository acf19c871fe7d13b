"""The aiohttp application: client page, `/ws` signaling, `/health`, `/languages`."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import WSCloseCode, web
from aiortc import RTCIceServer

from media.ice import browser_ice_server, offer_host_addresses
from media.peer import PeerConnections
from signaling.handlers import core_messages
from signaling.invite import add_invite_routes
from signaling.languages import LanguageSource, table_languages
from signaling.messages import MessageRegistry
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

SIGNALING = web.AppKey("signaling", Signaling)
STARTED = web.AppKey("started", float)


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


def create_app(
    settings: ServerSettings,
    *,
    languages: LanguageSource = table_languages,
    messages: MessageRegistry | None = None,
) -> web.Application:
    """The whole server. `languages` reports capabilities (engines may pass a live source);
    `messages` lets features add message types (default: the core protocol)."""
    offer_host_addresses(settings.ice_addresses)
    mixing = ThreadPoolExecutor(MIXER_THREADS, thread_name_prefix="mixer")
    app = web.Application()
    app[SIGNALING] = Signaling(
        rooms=Rooms(
            settings.max_participants, executor=mixing, resume_grace=settings.resume_grace
        ),
        peers=PeerConnections(settings.ice_servers),
        messages=messages or core_messages(),
        languages=languages,
        ice_servers=[browser_ice_server(server) for server in settings.ice_servers],
        limits=settings.limits,
    )
    app[STARTED] = time.monotonic()

    async def shutdown(app: web.Application) -> None:
        for session in list(app[SIGNALING].sessions):
            session.close(WSCloseCode.GOING_AWAY, "shutdown")
        signaling = app[SIGNALING]
        await signaling.rooms.close_all()
        await signaling.peers.close_all()

    async def stop_mixing(app: web.Application) -> None:
        mixing.shutdown(wait=True)

    app.on_shutdown.append(shutdown)
    app.on_cleanup.append(stop_mixing)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/health", health)
    app.router.add_get("/languages", list_languages)
    add_invite_routes(app)
    _serve_client(app, settings.client_dir)
    return app


async def websocket(request: web.Request) -> web.WebSocketResponse:
    signaling = request.app[SIGNALING]
    # aiohttp itself refuses frames far over the limit; the session answers the rest with
    # a `too_large` error before closing.
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT_SECONDS, max_msg_size=4 * signaling.limits.max_message_bytes
    )
    await ws.prepare(request)
    session = Session(ws, signaling)
    signaling.sessions.add(session)
    try:
        await session.run()
    finally:
        signaling.sessions.discard(session)
    return ws


async def health(request: web.Request) -> web.Response:
    rooms = request.app[SIGNALING].rooms
    return web.json_response(
        {
            "status": "ok",
            "uptime": round(time.monotonic() - request.app[STARTED], 3),
            "rooms": len(rooms),
            "participants": rooms.participant_count,
        }
    )


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
