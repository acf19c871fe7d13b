"""One WebSocket = one participant: reads, checks and dispatches messages; owns the peer."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from aiortc import RTCPeerConnection

from media.peer import PeerConnections
from signaling.access import Access
from signaling.languages import LanguageSource
from signaling.messages import ErrorCode, MessageRegistry, ProtocolError
from signaling.ratelimit import TokenBucket
from signaling.rooms import Participant, Rooms

log = logging.getLogger(__name__)

CLOSE_ICE_FAILED = 4001
CLOSE_RESUMED_ELSEWHERE = 4002
WRITER_GRACE_SECONDS = 10.0


@dataclass(frozen=True)
class SessionLimits:
    max_message_bytes: int = 64 * 1024
    messages_per_second: float = 20.0
    message_burst: int = 40
    outbox: int = 256
    """Server -> client messages waiting to be written. A client that lets this many pile
    up is not reading: it leaves its room at once (no ghost holding a seat), the backlog is
    dropped and its socket is closed (1008) rather than buffering without end."""
    join_timeout: float = 30.0
    """Seconds a socket may stay open without joining a room (1008, `join_timeout`)."""
    close_timeout: float = 10.0
    """Seconds a closed socket's unsent data (the close frame last) may take to reach the
    client. One that has not read it by then is cut off, so a silent non-reader cannot
    keep its connection and buffers after leaving."""
    sockets_per_address: int = 64
    """Open WebSockets from one client address. Generous, since a whole office or a
    table of phones may share one public address behind NAT."""


@dataclass
class Signaling:
    """What every session shares: the server's rooms, peers and message table."""

    rooms: Rooms
    peers: PeerConnections
    messages: MessageRegistry
    languages: LanguageSource
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    """For the browser, in `RTCIceServer` form."""
    limits: SessionLimits = field(default_factory=SessionLimits)
    access: Access = field(default_factory=Access)
    sessions: set[Session] = field(default_factory=set)
    """Open sockets, so shutdown can close each one."""

    def sockets_from(self, address: str) -> int:
        return sum(1 for session in self.sessions if session.address == address)

    def listenable(self, lang: str) -> bool:
        return any(info.code == lang and info.text_out for info in self.languages())


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


class Session:
    def __init__(self, ws: web.WebSocketResponse, server: Signaling, address: str = "") -> None:
        self.ws = ws
        self.server = server
        self.address = address
        """The client's network address: per-address limits and guessing backoff."""
        self.authorized = server.access.token is None
        """Whether a message of this socket carried the operator token yet."""
        self.participant: Participant | None = None
        self.pc: RTCPeerConnection | None = None
        self._outbox: asyncio.Queue[dict[str, Any] | _Close] = asyncio.Queue(
            server.limits.outbox
        )
        self._closing = False
        self._resumable = True
        """Whether the participant keeps their place when the socket ends: yes when the
        connection dropped (or its media failed), no when the server sent it away."""
        self._bucket = TokenBucket(server.limits.messages_per_second, server.limits.message_burst)
        self._writer: asyncio.Task[None] | None = None
        self.finished = asyncio.Event()
        """Set once the socket is closed and everything of this participant released."""

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message for this client. Never blocks; see `SessionLimits.outbox`."""
        if self._closing:
            return
        if self._outbox.full():
            log.warning("closing a session whose client stopped reading")
            self._close_now(WSCloseCode.POLICY_VIOLATION, "not reading")
            return
        self._outbox.put_nowait(message)

    def close(self, code: int = WSCloseCode.OK, reason: str = "") -> None:
        """Flush what is queued, then close the socket. The session then tears down."""
        if self._closing:
            return
        self._closing = True
        self._resumable = code == CLOSE_ICE_FAILED
        if self._outbox.full():
            self._outbox.get_nowait()
        self._outbox.put_nowait(_Close(code, reason))

    def shut_down(self) -> None:
        """Close with 1001 `shutdown` at once: queued messages no longer matter."""
        self._close_now(WSCloseCode.GOING_AWAY, "shutdown")

    def _close_now(self, code: int, reason: str) -> None:
        """Drop the backlog and put the close frame next on the wire, even when the writer
        is stuck behind a client that does not read (its kernel buffers are full)."""
        if self.ws.closed:
            return  # a close frame is out already
        self._closing = True
        while not self._outbox.empty():
            self._outbox.get_nowait()
        if self._writer is None:
            self._outbox.put_nowait(_Close(code, reason))
            return
        self._writer.cancel()
        self._writer = asyncio.create_task(
            self._leave_and_close(code, reason), name="session-closer"
        )

    async def _leave_and_close(self, code: int, reason: str) -> None:
        # Leave first: a client that reads nothing must not hold a seat meanwhile.
        await self.end_media()
        # No drain: the frame follows what the transport already holds; waiting for a
        # non-reader to make room would wait forever.
        await self.ws.close(code=code, message=reason.encode(), drain=False)

    async def run(self) -> None:
        """Serve the socket until it closes; then nothing of this participant remains."""
        self._writer = asyncio.create_task(self._write(), name="session-writer")
        join_deadline = asyncio.get_running_loop().call_later(
            self.server.limits.join_timeout, self._join_expired
        )
        try:
            async for frame in self.ws:
                if frame.type == WSMsgType.TEXT:
                    await self._receive(frame.data)
                elif frame.type == WSMsgType.BINARY:
                    self.send(
                        ProtocolError(ErrorCode.BAD_JSON, "binary frames are not used").to_message()
                    )
                if self._closing:
                    break
        finally:
            join_deadline.cancel()
            await self._teardown()

    def _join_expired(self) -> None:
        if self.participant is not None or self._closing:
            return
        timeout = self.server.limits.join_timeout
        self.send(
            ProtocolError(
                ErrorCode.JOIN_TIMEOUT, f"no join within {timeout:g} s of connecting"
            ).to_message()
        )
        self.close(WSCloseCode.POLICY_VIOLATION, ErrorCode.JOIN_TIMEOUT)

    async def end_media(self) -> None:
        """Leave the room for good and release the peer connection (idempotent)."""
        participant, self.participant = self.participant, None
        if participant is not None:
            await self.server.rooms.leave(participant)
        await self.release_peer()

    async def release_peer(self) -> None:
        if self.pc is not None:
            pc, self.pc = self.pc, None
            await self.server.peers.close(pc)

    async def hand_over(self) -> None:
        """Another connection resumed this participant: this one lets go of them, without
        leaving the room, and closes."""
        self.participant = None
        await self.release_peer()
        self.close(CLOSE_RESUMED_ELSEWHERE, "resumed elsewhere")

    def media_failed(self) -> None:
        """The peer connection failed or was closed by the far side: the client must
        reconnect (and may resume), so say why and close; `run` then releases the peer."""
        self.send(
            ProtocolError(
                ErrorCode.ICE_FAILED, "the media connection failed; reconnect to retry"
            ).to_message()
        )
        self.close(CLOSE_ICE_FAILED, ErrorCode.ICE_FAILED)

    async def _receive(self, data: str) -> None:
        limits = self.server.limits
        try:
            # A character is at most 4 bytes: only long text needs encoding to be measured.
            if len(data) * 4 > limits.max_message_bytes and (
                len(data.encode()) > limits.max_message_bytes
            ):
                raise ProtocolError(
                    ErrorCode.TOO_LARGE,
                    f"frames are limited to {limits.max_message_bytes} bytes",
                    WSCloseCode.MESSAGE_TOO_BIG,
                )
            if not self._bucket.take():
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED,
                    f"more than {limits.messages_per_second:g} messages a second",
                    WSCloseCode.POLICY_VIOLATION,
                )
            kind, message = self.server.messages.parse(data)
            if not self.authorized:
                # Any message may carry `access_token` (join, or another first message such
                # as a resume); until one does, nothing else is heard.
                self.server.access.check_token(self.address, message.get("access_token"))
                self.authorized = True
            if kind.requires_join and self.participant is None:
                raise ProtocolError(ErrorCode.NOT_JOINED, f"{kind.name}: join a room first")
            await kind.handler(self, kind.validate(message))
        except ProtocolError as error:
            self.send(error.to_message())
            if error.close_code is not None:
                self.close(error.close_code, error.code)

    async def _write(self) -> None:
        while True:
            item = await self._outbox.get()
            if isinstance(item, _Close):
                await self.ws.close(code=item.code, message=item.reason.encode())
                return
            try:
                await self.ws.send_json(item)
            except (ConnectionError, RuntimeError):
                # The client is gone; keep draining so close() still finds its marker.
                continue

    async def _teardown(self) -> None:
        # Dropped without `leave`: the participant may come back with their resume token.
        participant, self.participant = self.participant, None
        if participant is not None and self._resumable:
            await self.server.rooms.suspend(participant)
        elif participant is not None:
            await self.server.rooms.leave(participant)
        await self.release_peer()
        self.close(WSCloseCode.OK)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WRITER_GRACE_SECONDS
        # `_close_now` may swap in a new writer meanwhile: wait for whichever is current.
        while self._writer is not None and not self._writer.done():
            if loop.time() >= deadline:
                # A client that stopped reading can stall a write; it gets no more time.
                self._writer.cancel()
                break
            await asyncio.wait({self._writer}, timeout=deadline - loop.time())
        writer = self._writer
        if writer is not None and writer.done() and not writer.cancelled() and writer.exception():
            log.error("closing a session failed", exc_info=writer.exception())
        self.finished.set()
