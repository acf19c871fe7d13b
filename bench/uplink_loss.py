"""Speaker -> listener lag before and after lost uplink packets (`bench.latency --loss`).

A `--no-translation` server (app.py, its own process, plain HTTP on loopback) relays one
English speaker to one English listener. The speaker's microphone plays a 100 ms tone
every second; lag is from the moment the speaker's track hands aiortc a burst's first frame
to the first decoded frame of it above -40 dBFS at the listener (whose aiortc receive
buffer holds 4 packets: a constant client artefact). After `BEFORE` bursts the speaker's
transport drops `--loss-packets` consecutive RTP packets in a gap between bursts (netem is
not available here), then `AFTER` more bursts are timed. The goal: lag after the loss
equals lag before it, from the first burst more than a second after it.
"""

from __future__ import annotations

import asyncio
import fractions
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import av
import numpy as np
from aiortc import RTCDtlsTransport
from aiortc.rtp import is_rtcp

from media.frames import FRAME_SAMPLES, MIX_RATE
from media.ice import offer_host_addresses
from media.inbound import rms_dbfs
from tests.fixtures.webrtc import Recorder, SpeechTrack, TestPeer

ROOT = Path(__file__).resolve().parent.parent
BURST_EVERY = 50
"""Frames (1 s) from one tone burst to the next: a burst is matched with the first one
heard within a second after it."""
BURST_FRAMES = 5
BEFORE, AFTER = 8, 10
HEARD_DBFS = -40.0
TIME_BASE = fractions.Fraction(1, MIX_RATE)


class BurstTrack(SpeechTrack):
    """A microphone that plays a 100 ms tone every second and notes when each one starts."""

    def __init__(self) -> None:
        super().__init__(None)
        self.frame = 0
        self.burst_sent: list[float] = []
        self.ticked = asyncio.Event()

    async def until(self, done: Callable[[], bool]) -> None:
        while not done():
            self.ticked.clear()
            await self.ticked.wait()

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()
        phase = self.frame % BURST_EVERY
        if phase < BURST_FRAMES:
            t = np.arange(FRAME_SAMPLES) + self.frame * FRAME_SAMPLES
            tone = (np.sin(2 * np.pi * 440 * t / MIX_RATE) * 12000).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(tone[np.newaxis, :], format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = MIX_RATE, self._pts, TIME_BASE
            if phase == 0:
                self.burst_sent.append(time.monotonic())
        self.frame += 1
        self.ticked.set()
        return frame


class BurstRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.burst_heard: list[float] = []
        self._quiet = 0

    def take(self, pcm: np.ndarray) -> None:
        loud = rms_dbfs(pcm) > HEARD_DBFS
        if loud and self._quiet >= BURST_FRAMES:
            self.burst_heard.append(time.monotonic())
        self._quiet = 0 if loud else self._quiet + 1
        self.samples += len(pcm)
        self._arrived.set()


async def _server(port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "app.py", "--no-translation", "--http", "--host", "127.0.0.1",
        "--port", str(port), "--ice-address", "127.0.0.1", "--log-level", "WARNING",
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    async with asyncio.timeout(60):
        while b"listening" not in await process.stdout.readline():
            pass
    return process


def _ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"p50 {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


async def measure(port: int, loss_packets: int) -> str:
    offer_host_addresses(["127.0.0.1"])
    process = await _server(port)
    session = aiohttp.ClientSession()
    url = f"http://127.0.0.1:{port}/ws"
    speaker = TestPeer(await session.ws_connect(url))
    listener = TestPeer(await session.ws_connect(url))
    speaker.mic = mic = BurstTrack()
    listener.recorder = heard = BurstRecorder()
    dropping = [0]
    send_rtp = RTCDtlsTransport._send_rtp

    async def lossy(transport: RTCDtlsTransport, data: bytes) -> None:
        ours = speaker.pc is not None and transport is speaker.pc.getSenders()[0].transport
        if ours and dropping[0] and not is_rtcp(data):
            dropping[0] -= 1
            return
        await send_rtp(transport, data)

    RTCDtlsTransport._send_rtp = lossy  # type: ignore[method-assign]
    try:
        await speaker.join("loss", "Speaker", "eng")
        await listener.join("loss", "Listener", "eng")
        await listener.connect(microphone=False)
        await speaker.connect()
        start = len(mic.burst_sent) + 1
        await mic.until(lambda: len(mic.burst_sent) >= start + BEFORE)
        await mic.until(lambda: mic.frame % BURST_EVERY == BURST_FRAMES + 5)  # between bursts
        lost_at = time.monotonic()
        dropping[0] = loss_packets
        await mic.until(lambda: len(mic.burst_sent) >= start + BEFORE + AFTER + 2)
    finally:
        RTCDtlsTransport._send_rtp = send_rtp  # type: ignore[method-assign]
        for peer in (speaker, listener):
            await peer.close()
        await session.close()
        process.terminate()
        await process.wait()
        offer_host_addresses(None)
    lags = []
    for sent in mic.burst_sent[start:]:
        arrivals = [t for t in heard.burst_heard if sent <= t < sent + BURST_EVERY * 0.02]
        if arrivals:
            lags.append((sent, arrivals[0] - sent))
    before = [lag for sent, lag in lags if sent < lost_at]
    first_second = [lag for sent, lag in lags if lost_at <= sent < lost_at + 1.0]
    after = [lag for sent, lag in lags if sent >= lost_at + 1.0]
    return (
        f"uplink loss: {loss_packets} RTP packet(s) dropped by the speaker's transport, "
        f"speaker -> listener lag (same language, {os.cpu_count()} CPUs)\n"
        f"  before the loss          {len(before):3d} bursts  {_ms(before)}\n"
        f"  first second after it    {len(first_second):3d} bursts  {_ms(first_second)}\n"
        f"  from 1 s after it        {len(after):3d} bursts  {_ms(after)}"
    )
