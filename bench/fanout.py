"""Fan-out cost: one speaker, N listeners of one language, in one room.

    .venv/bin/python -m bench.fanout [--sizes 10,50,100,150] [--seconds 6]

Compares, in one run, (1) BabbleFish's server (one mix and one Opus encode per distinct
mix, pre-encoded packets to every track) with (2) the way an aiortc user fans out: the
speaker's track through `MediaRelay` to every listener, each sender encoding on its own.

Each server runs in its own process; the CPU counted is that process's only (user +
system, from /proc, over the measured window). Listeners are aiortc peers in this
process; they count packet arrivals instead of decoding, so they stay light. Listeners
offer recvonly (no microphone), so the figures are the cost of sending, not receiving.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import aiohttp
import av
import numpy as np
from aiohttp import web
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bench.running import run
from media.frames import FRAME_SAMPLES, MIX_RATE
from media.ice import offer_host_addresses
from tests.fixtures.processes import free_port

LOOPBACK = ["127.0.0.1"]
WARMUP_SECONDS = 1.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- servers (subprocesses)


def babblefish_app(listeners: int) -> web.Application:
    from signaling.web import SIGNALING, ServerSettings, create_app

    app = create_app(ServerSettings(max_participants=listeners + 1, ice_addresses=LOOPBACK))

    async def stats(request: web.Request) -> web.Response:
        rooms = list(request.app[SIGNALING].rooms)
        return web.json_response([vars(room.mixer.stats) for room in rooms])

    app.router.add_get("/bench/stats", stats)
    return app


def relay_app() -> web.Application:
    """The aiortc way: MediaRelay of the speaker's track, one encoder per listener."""
    offer_host_addresses(LOOPBACK)
    relay = MediaRelay()
    speaker: dict[str, MediaStreamTrack] = {}
    pcs: set[RTCPeerConnection] = set()

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        name = ""
        pc: RTCPeerConnection | None = None
        async for frame in ws:
            message = json.loads(frame.data)
            if message["type"] == "join":
                name = message["name"]
                await ws.send_json({"type": "joined", "id": name, "participants": []})
            elif message["type"] == "offer":
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pcs.add(pc)

                @pc.on("track")
                def on_track(track: MediaStreamTrack) -> None:
                    speaker["track"] = track

                await pc.setRemoteDescription(RTCSessionDescription(message["sdp"], "offer"))
                if name != "speaker":
                    pc.addTrack(relay.subscribe(speaker["track"]))
                await pc.setLocalDescription(await pc.createAnswer())
                await ws.send_json({"type": "answer", "sdp": pc.localDescription.sdp})
        if pc is not None:
            pcs.discard(pc)
            await pc.close()
        return ws

    async def close_all(app: web.Application) -> None:
        await asyncio.gather(*(pc.close() for pc in list(pcs)))

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.on_shutdown.append(close_all)
    return app


def serve(mode: str, port: int, listeners: int) -> None:
    app = babblefish_app(listeners) if mode == "babblefish" else relay_app()

    async def ready(app: web.Application) -> None:
        print("ready", flush=True)

    app.on_startup.append(ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


# ---------------------------------------------------------------- clients (this process)


class LoopedVoice(MediaStreamTrack):
    """A speech-like signal (voiced harmonics, syllable-rate envelope), real-time paced."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        t = np.arange(MIX_RATE * 2) / MIX_RATE
        pitch = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(pitch) / MIX_RATE
        voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
        syllables = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
        self._voice = (0.15 * voiced * syllables).astype(np.float32)
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._start = self._start or time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._pts / MIX_RATE - time.monotonic()))
        at = self._pts % len(self._voice)
        pcm = np.resize(np.roll(self._voice, -at)[:FRAME_SAMPLES], FRAME_SAMPLES)
        frame = av.AudioFrame.from_ndarray(
            (pcm * 32767).astype(np.int16)[np.newaxis, :], format="s16", layout="mono"
        )
        frame.sample_rate = MIX_RATE
        frame.pts = self._pts
        frame.time_base = Fraction(1, MIX_RATE)
        self._pts += FRAME_SAMPLES
        return frame


ARRIVALS: dict[int, list[float]] = {}


async def _count_arrival(self: RTCRtpReceiver, packet: Any, arrival_time_ms: int) -> None:
    """Stands in for aiortc's receive path in the listeners: note the time, skip decoding."""
    ARRIVALS.setdefault(id(self), []).append(time.monotonic())


class Client:
    def __init__(self, session: aiohttp.ClientSession, url: str, name: str) -> None:
        self.session, self.url, self.name = session, url, name
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.receiver: RTCRtpReceiver | None = None
        self._reader: asyncio.Task[None] | None = None

    async def connect(self, track: MediaStreamTrack | None) -> None:
        self.ws = await self.session.ws_connect(self.url)
        await self.ws.send_json({"type": "join", "room": "bench", "name": self.name, "lang": "eng"})
        await self._expect("joined")
        if track is None:
            transceiver = self.pc.addTransceiver("audio", direction="recvonly")
        else:
            transceiver = self.pc.addTransceiver(track, direction="sendrecv")
        self.receiver = transceiver.receiver
        connected = asyncio.Event()

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                connected.set()

        await self.pc.setLocalDescription(await self.pc.createOffer())
        await self.ws.send_json({"type": "offer", "sdp": self.pc.localDescription.sdp})
        answer = await self._expect("answer")
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await connected.wait()
        self._reader = asyncio.create_task(self._drain())  # answers the server's pings

    async def _expect(self, kind: str) -> dict[str, Any]:
        assert self.ws is not None
        while True:
            message: dict[str, Any] = json.loads((await self.ws.receive()).data)
            if message["type"] == kind:
                return message

    async def _drain(self) -> None:
        assert self.ws is not None
        async for _ in self.ws:
            pass

    async def close(self) -> None:
        await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def process_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Result:
    mode: str
    listeners: int
    seconds: float
    server_cpu: float
    delivered: float
    """Packets received / packets a real-time sender would have sent (50 per second)."""
    gap_p99_ms: float
    gap_max_ms: float
    late_ticks: int | None
    skipped_ticks: int | None
    encode_streams: int | None

    @property
    def ms_per_listener_second(self) -> float:
        return 1000 * self.server_cpu / (max(self.listeners, 1) * self.seconds)

    @property
    def ms_per_delivered_listener_second(self) -> float:
        """Fair when a server falls behind: it then spends less because it sends less."""
        return self.ms_per_listener_second / max(self.delivered, 1e-9)

    @property
    def cores(self) -> float:
        return self.server_cpu / self.seconds


async def run_case(mode: str, listeners: int, seconds: float) -> Result:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fanout",
        "serve",
        mode,
        str(port),
        str(listeners),
        stdout=asyncio.subprocess.PIPE,
    )
    assert server.stdout is not None
    await server.stdout.readline()
    url = f"http://127.0.0.1:{port}"
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))  # sockets stay open
    clients: list[Client] = []
    try:
        speaker = Client(session, f"{url}/ws", "speaker")
        clients.append(speaker)
        await speaker.connect(LoopedVoice())
        for start in range(0, listeners, 10):
            batch = [
                Client(session, f"{url}/ws", f"l{i}")
                for i in range(start, min(start + 10, listeners))
            ]
            clients += batch
            await asyncio.gather(*(client.connect(None) for client in batch))
        await asyncio.sleep(WARMUP_SECONDS)

        before_stats = await _mixer_stats(session, url, mode)
        cpu_before, t0 = process_cpu_seconds(server.pid), time.monotonic()
        await asyncio.sleep(seconds)
        cpu_after, t1 = process_cpu_seconds(server.pid), time.monotonic()
        after_stats = await _mixer_stats(session, url, mode)
    finally:
        for client in clients:
            await client.close()
        await session.close()
        server.terminate()
        await server.wait()

    gaps: list[float] = []
    received = 0
    for client in clients[1:]:
        assert client.receiver is not None
        times = [t for t in ARRIVALS.pop(id(client.receiver), []) if t0 <= t <= t1]
        received += len(times)
        gaps += list(np.diff(times) * 1000)
    ARRIVALS.clear()
    expected = listeners * (t1 - t0) * MIX_RATE / FRAME_SAMPLES
    return Result(
        mode,
        listeners,
        t1 - t0,
        cpu_after - cpu_before,
        received / expected if expected else 1.0,
        float(np.percentile(gaps, 99)) if gaps else float("nan"),
        float(np.max(gaps)) if gaps else float("nan"),
        *_stat_deltas(before_stats, after_stats),
    )


async def _mixer_stats(
    session: aiohttp.ClientSession, url: str, mode: str
) -> dict[str, int] | None:
    if mode != "babblefish":
        return None
    async with session.get(f"{url}/bench/stats") as reply:
        rooms: list[dict[str, int]] = await reply.json()
        return rooms[0]


def _stat_deltas(
    before: dict[str, int] | None, after: dict[str, int] | None
) -> tuple[int | None, int | None, int | None]:
    if before is None or after is None:
        return None, None, None
    return (
        after["late_ticks"] - before["late_ticks"],
        after["skipped_ticks"] - before["skipped_ticks"],
        after["encode_streams"],
    )


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def print_table(results: list[Result]) -> None:
    print(
        f"{'server':<11}{'N':>5}{'cores':>7}{'ms/listener-s':>15}{'ms/delivered':>14}"
        f"{'delivered':>11}{'gap p99':>9}{'gap max':>9}{'late':>6}{'skipped':>9}{'encodes':>9}"
    )
    for r in results:
        print(
            f"{r.mode:<11}{r.listeners:>5}{r.cores:>7.3f}{r.ms_per_listener_second:>15.2f}"
            f"{r.ms_per_delivered_listener_second:>14.2f}{r.delivered:>11.1%}"
            f"{r.gap_p99_ms:>9.1f}{r.gap_max_ms:>9.1f}"
            f"{_cell(r.late_ticks):>6}{_cell(r.skipped_ticks):>9}{_cell(r.encode_streams):>9}"
        )
    by_size: dict[int, dict[str, Result]] = {}
    for r in results:
        by_size.setdefault(r.listeners, {})[r.mode] = r
    print("\nCPU per delivered listener-second, MediaRelay / encode-once:")
    for size, pair in sorted(by_size.items()):
        if {"babblefish", "relay"} <= set(pair):
            ratio = (
                pair["relay"].ms_per_delivered_listener_second
                / pair["babblefish"].ms_per_delivered_listener_second
            )
            print(f"  N={size:>3}: {ratio:5.1f}x")
    marginal = {mode: _marginal_ms(results, mode) for mode in ("babblefish", "relay")}
    print("Marginal CPU per extra listener (slope of cores over listeners actually served):")
    for mode, ms in marginal.items():
        print(f"  {mode:<11}{ms:7.2f} ms per listener-second")
    if marginal["babblefish"] > 0:
        print(f"  ratio {marginal['relay'] / marginal['babblefish']:.1f}x")


def _marginal_ms(results: list[Result], mode: str) -> float:
    points = [(r.listeners * r.delivered, r.cores) for r in results if r.mode == mode]
    if len(points) < 2:
        return float("nan")
    served, cores = np.array(points).T
    slope = np.polyfit(served, cores, 1)[0]
    return float(1000 * slope)


async def bench(sizes: list[int], seconds: float) -> None:
    RTCRtpReceiver._handle_rtp_packet = _count_arrival  # type: ignore[method-assign]
    offer_host_addresses(LOOPBACK)
    results = []
    for size in sizes:
        for mode in ("babblefish", "relay"):
            result = await run_case(mode, size, seconds)
            results.append(result)
            print(f"  done: {mode} N={size}", file=sys.stderr, flush=True)
    print(
        f"\n{os.cpu_count()} CPUs; {seconds:g} s measured per case, "
        f"after {WARMUP_SECONDS:g} s warm-up"
    )
    print(
        "cores, ms: CPU of the server process only (ms per listener-second; 'delivered'\n"
        "divides by the share of packets that arrived). delivered, gaps (ms between packets):\n"
        "at the listeners. late/skipped ticks, encodes: BabbleFish's mixer.\n"
    )
    print_table(results)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        serve(args[1], int(args[2]), int(args[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,50,100,150", help="listener counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per case")
    options = parser.parse_args(args)
    sizes = [int(size) for size in options.sizes.split(",")]
    run(bench(sizes, options.seconds))


if __name__ == "__main__":
    main()
