"""One aiortc peer connection per participant: negotiation, receive latency, bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence

from aiortc import (
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpCodecCapability,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack

from media.ice import rtc_configuration
from media.rtp_jitter import AudioJitterBuffer

log = logging.getLogger(__name__)

ICE_CONNECT_TIMEOUT = 30.0
"""Seconds an answered offer may take to connect before its peer connection is released.
An offer with no usable candidates (none at all, or only hostnames and mDNS names aiortc
cannot resolve) never connects, and aioice waits for more candidates without end. A
browser's own ICE checks give up after about 30 s, so a real connection is never cut."""

_MEDIA_LINE = re.compile(r"^m=(\w+)", re.MULTILINE)
_OPUS = re.compile(r"^a=rtpmap:\d+ opus/48000", re.MULTILINE | re.IGNORECASE)
_FINGERPRINT = re.compile(r"^a=fingerprint:\S+ [0-9A-Fa-f:]+\s*$", re.MULTILINE)


class OfferError(ValueError):
    """The offer cannot be used; the message says why, for the client."""


def check_offer(sdp: str) -> None:
    """One audio section with Opus, nothing else: the server sends pre-encoded Opus."""
    if not sdp.startswith("v=0"):
        raise OfferError("not an SDP offer (must start with v=0)")
    media = _MEDIA_LINE.findall(sdp)
    if media != ["audio"]:
        raise OfferError(f"expected exactly one m=audio section, got {media or 'none'}")
    if not _OPUS.search(sdp):
        raise OfferError("the audio section must offer opus/48000")
    if not _FINGERPRINT.search(sdp):
        # Without it DTLS cannot start: aiortc would answer, then fail with a traceback.
        raise OfferError("the offer has no a=fingerprint line (DTLS is required)")


def tune_receiver(receiver: RTCRtpReceiver) -> AudioJitterBuffer:
    """Replace aiortc's receive buffer (no public setting for it) with one that decodes each
    packet on arrival and never keeps a backlog after a loss (see `media.rtp_jitter`).

    aiortc's default holds 4 packets before decoding (sender-to-decoder median 81 ms here).
    Jitter is absorbed once, later, by the mixer's own `media.jitter.JitterBuffer`, and the
    speech pipeline needs no smoothing at all."""
    buffer = AudioJitterBuffer()
    receiver._RTCRtpReceiver__jitter_buffer = buffer  # type: ignore[attr-defined]
    return buffer


def _opus_only() -> list[RTCRtpCodecCapability]:
    codecs = RTCRtpSender.getCapabilities("audio").codecs
    return [codec for codec in codecs if codec.mimeType.lower() == "audio/opus"]


class PeerConnections:
    """Every peer connection the server holds, so shutdown and tests can account for them."""

    def __init__(
        self,
        ice_servers: Sequence[RTCIceServer] = (),
        connect_timeout: float = ICE_CONNECT_TIMEOUT,
    ) -> None:
        self.ice_servers = list(ice_servers)
        self.connect_timeout = connect_timeout
        self.timed_out = 0
        """Connections released because ICE never connected, for metrics and tests."""
        self._open: set[RTCPeerConnection] = set()
        self._deadlines: dict[RTCPeerConnection, asyncio.Task[None]] = {}
        self._connected: dict[RTCPeerConnection, tuple[asyncio.Event, Callable[[], object]]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def create(self, on_ended: Callable[[], object]) -> RTCPeerConnection:
        """A connection that calls `on_ended` once if it fails, closes from the far side, or
        is not connected `connect_timeout` seconds after `answer` answered it."""
        pc = RTCPeerConnection(rtc_configuration(self.ice_servers))
        self._open.add(pc)
        connected = asyncio.Event()

        @pc.on("connectionstatechange")
        def _state_changed() -> None:
            if pc.connectionState == "connected":
                connected.set()
            if pc.connectionState in ("failed", "closed") and pc in self._open:
                on_ended()

        self._connected[pc] = (connected, on_ended)
        return pc

    async def _connect_deadline(
        self, pc: RTCPeerConnection, connected: asyncio.Event, on_ended: Callable[[], object]
    ) -> None:
        try:
            async with asyncio.timeout(self.connect_timeout):
                await connected.wait()
        except TimeoutError:
            if pc in self._open:
                log.info("releasing a peer connection whose ICE did not connect in %g s",
                         self.connect_timeout)
                self.timed_out += 1
                on_ended()
                await self.close(pc)
        finally:
            if self._deadlines.get(pc) is asyncio.current_task():
                del self._deadlines[pc]

    async def answer(
        self,
        pc: RTCPeerConnection,
        offer_sdp: str,
        outbound: MediaStreamTrack,
        on_inbound: Callable[[MediaStreamTrack], None],
    ) -> str:
        """Apply the offer, send `outbound` on its audio transceiver, return the answer SDP.

        `on_inbound` gets the participant's microphone track. Raises OfferError for an
        offer aiortc cannot apply.
        """
        check_offer(offer_sdp)
        pc.on("track", on_inbound)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        except Exception as error:  # aiortc raises many types for malformed SDP
            raise OfferError(f"could not apply the offer: {error}") from error
        transceiver = pc.getTransceivers()[0]
        transceiver.setCodecPreferences(_opus_only())
        tune_receiver(transceiver.receiver)
        pc.addTrack(outbound)
        await pc.setLocalDescription(await pc.createAnswer())
        if pc in self._connected and pc not in self._deadlines:
            connected, on_ended = self._connected[pc]
            self._deadlines[pc] = asyncio.create_task(
                self._connect_deadline(pc, connected, on_ended), name="ice-connect-deadline"
            )
        return pc.localDescription.sdp

    async def close(self, pc: RTCPeerConnection) -> None:
        self._open.discard(pc)
        self._connected.pop(pc, None)
        deadline = self._deadlines.pop(pc, None)
        if deadline is not None and deadline is not asyncio.current_task():
            deadline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await deadline
        # Shielded: aiortc may be closing it already (far side's DTLS close), and cancelling
        # a second close() would cancel the future the first one completes.
        with contextlib.suppress(Exception):
            await asyncio.shield(pc.close())

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(pc) for pc in list(self._open)))
