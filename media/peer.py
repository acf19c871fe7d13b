"""One aiortc peer connection per participant: negotiation, receive latency, bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
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

_MEDIA_LINE = re.compile(r"^m=(\w+)", re.MULTILINE)
_OPUS = re.compile(r"^a=rtpmap:\d+ opus/48000", re.MULTILINE | re.IGNORECASE)


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

    def __init__(self, ice_servers: Sequence[RTCIceServer] = ()) -> None:
        self.ice_servers = list(ice_servers)
        self._open: set[RTCPeerConnection] = set()

    def __len__(self) -> int:
        return len(self._open)

    def create(self, on_ended: Callable[[], object]) -> RTCPeerConnection:
        """A connection that calls `on_ended` once if it fails or closes from the far side."""
        pc = RTCPeerConnection(rtc_configuration(self.ice_servers))
        self._open.add(pc)

        @pc.on("connectionstatechange")
        def _state_changed() -> None:
            if pc.connectionState in ("failed", "closed") and pc in self._open:
                on_ended()

        return pc

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
        return pc.localDescription.sdp

    async def close(self, pc: RTCPeerConnection) -> None:
        self._open.discard(pc)
        # Shielded: aiortc may be closing it already (far side's DTLS close), and cancelling
        # a second close() would cancel the future the first one completes.
        with contextlib.suppress(Exception):
            await asyncio.shield(pc.close())

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(pc) for pc in list(self._open)))
