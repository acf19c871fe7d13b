"""Three aiortc participants through a real server on loopback: who hears whom."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCDtlsTransport, RTCPeerConnection
from aiortc.rtp import is_rtcp

from media.frames import FRAME_SAMPLES, MIX_RATE
from media.ice import offer_host_addresses
from tests.fixtures.server import signaling_of
from tests.fixtures.speech import Speech
from tests.fixtures.webrtc import PeerFactory


def envelope(audio: np.ndarray) -> np.ndarray:
    """RMS per 20 ms frame."""
    frames = len(audio) // FRAME_SAMPLES
    blocks = audio[: frames * FRAME_SAMPLES].reshape(frames, FRAME_SAMPLES)
    return np.sqrt(np.mean(np.square(blocks), axis=1))


def aligned_correlation(source: np.ndarray, received: np.ndarray) -> float:
    """Pearson correlation of the envelopes at the lag where they line up best."""
    a, b = envelope(source), envelope(received)
    lags = np.correlate(b - b.mean(), a - a.mean(), mode="valid")
    lag = int(np.argmax(lags))
    return float(np.corrcoef(a, b[lag : lag + len(a)])[0, 1])


async def test_same_language_hears_the_speaker_others_hear_silence(
    babblefish, peer_factory: PeerFactory, english_speech: Speech
) -> None:
    assert english_speech.rate == MIX_RATE
    alice, bruno, carol = [await peer_factory(babblefish) for _ in range(3)]
    await alice.join("loop", "Alice", "eng")
    await bruno.join("loop", "Bruno", "spa")
    await carol.join("loop", "Carol", "eng")
    await alice.connect(english_speech.audio)
    await bruno.connect()
    await carol.connect()

    # Everyone is connected and their microphones reach the server before A speaks.
    await carol.recorder.wait_for(FRAME_SAMPLES * 10)
    starts = {peer: peer.recorder.mark() for peer in (alice, bruno, carol)}
    alice.mic.play()
    # The mixer of a silent room stops a few seconds after the last voice (no packets
    # then): wait for a second past Alice's last voiced sample.
    voiced_end = round(english_speech.voiced[-1][1] * MIX_RATE)
    heard_until = voiced_end + MIX_RATE
    for peer in (carol, alice, bruno):
        await peer.recorder.wait_for(starts[peer] + heard_until - peer.recorder.samples)

    heard = carol.recorder.audio(starts[carol])
    assert aligned_correlation(english_speech.audio[:voiced_end], heard) > 0.7
    assert np.max(np.abs(alice.recorder.audio(starts[alice]))) < 1e-3  # never hears herself
    assert np.max(np.abs(bruno.recorder.audio(starts[bruno]))) < 1e-3  # other language

    mixer = signaling_of(babblefish).rooms.get("loop").mixer
    assert mixer.stats.listeners == 3

    # The speaking indicator: Carol was told Alice was loud, and never that Bruno was.
    levels = []
    while not carol.inbox.empty():
        message = json.loads(carol.inbox.get_nowait().data)
        if message["type"] == "levels":
            levels.append(message["levels"])
    assert max(entry[alice.id] for entry in levels) > 0.5
    assert max(entry[bruno.id] for entry in levels) == 0.0


async def test_ice_addresses_are_offered_exactly_and_public_ones_announced() -> None:
    offer_host_addresses(["127.0.0.1", "203.0.113.9"])
    try:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("audio")
        await pc.setLocalDescription(await pc.createOffer())
        hosts = {
            line.split()[4]
            for line in pc.localDescription.sdp.splitlines()
            if line.startswith("a=candidate:")
        }
        await pc.close()
    finally:
        offer_host_addresses(None)
    assert hosts == {"127.0.0.1", "203.0.113.9"}


async def test_a_lost_uplink_packet_leaves_no_backlog_at_the_server(
    babblefish, peer_factory: PeerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await peer_factory(babblefish)
    await alice.join("loss", "Alice", "eng")
    inbound = signaling_of(babblefish).rooms.get("loss").participants[alice.id].audio
    decoded = [0]
    progress = asyncio.Event()
    receive = inbound.receive

    def counting(pcm: np.ndarray, stream_time: float, received: float) -> None:
        decoded[0] += len(pcm)
        progress.set()
        receive(pcm, stream_time, received)

    monkeypatch.setattr(inbound, "receive", counting)
    sent = [0]
    send_rtp = RTCDtlsTransport._send_rtp

    async def lossy(transport: RTCDtlsTransport, data: bytes) -> None:
        # Alice's uplink loses its 25th RTP packet, as Wi-Fi does.
        ours = alice.pc is not None and transport is alice.pc.getSenders()[0].transport
        if ours and not is_rtcp(data):
            sent[0] += 1
            if sent[0] == 25:
                return
        await send_rtp(transport, data)

    monkeypatch.setattr(RTCDtlsTransport, "_send_rtp", lossy)
    await alice.connect()

    async def until(done: Callable[[], bool]) -> None:
        while not done():
            progress.clear()
            await progress.wait()

    await until(lambda: sent[0] >= 75)
    # What arrived is decoded, but for the packet or two still on its way: the server
    # holds no backlog behind the hole (aiortc's own buffer kept 15 packets for good).
    async with asyncio.timeout(10):
        await until(lambda: sent[0] - 1 - decoded[0] // FRAME_SAMPLES <= 2)
