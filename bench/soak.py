"""A hostile soak of a real server on loopback: crashes, contract violations, leaks.

    .venv/bin/python -m bench.soak            # the full run (a few minutes on 2 cores)
    .venv/bin/python -m bench.soak --quick    # a tenth of each phase
    .venv/bin/python -m bench.soak --allocator jemalloc   # the server on jemalloc

The server is `app.py --no-translation --http` in its own process. Phases, each bounded
in count and time:
- hostile: 10,000 signaling messages over many sockets: malformed JSON, binary frames,
  unknown types, bad fields, bad SDP, oversize frames, floods past the rate limit, names
  with unicode edge cases (ZWJ/ZWNJ, RTL marks, combining marks, emoji sequences, NUL,
  lone surrogates, 64+ characters).
- cycles: join -> offer/answer -> ICE connected -> leave with aiortc, half of them abrupt
  (socket dropped without `leave`, peer connection left to time out on the server).
- idle: 1,000 WebSockets from 127.0.0.1 that never send anything, held, then closed.
- storm: 20 people in one room with media, all cut off at once (socket and peer connection
  dropped without a word), 15 times; each comes back as the page does: backoff, a new
  socket sending `resume` with its last token, a fresh offer; each must come back as
  the same participant.

The phases run twice. Contract: every `error` code the server sends must be one
docs/protocol.md documents, and every close code one it names. Leaks: the server's own
/health counts (sockets, rooms, participants, peer connections, asyncio tasks) must return
to their idle values, and its RSS, threads and fds (from /proc) are printed after each
phase has settled. RSS growth is given over the warm-up (the goal: within 5 %) and over
the first pass, which a high-water mark does not grow but a leak does. `--trace-python`
adds the server's Python heap (tracemalloc, through /health), which tells objects that
stay alive from memory the allocator or C libraries keep.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bench.running import run
from media.ice import offer_host_addresses
from signaling.memory import ALLOCATORS
from tests.fixtures.processes import free_port
from tests.fixtures.webrtc import SpeechTrack

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "protocol.md"
PHASE_TIMEOUT = 240.0
TRIM_SECONDS = 5.0
"""The server's --memory-trim-interval here (60 s by default): RSS is read after one has
passed, so each figure is what the server keeps, not a burst's passing high-water mark."""

NAMES = [
    "می\u200cخواهم",  # Persian with a ZWNJ
    "👨\u200d👩\u200d👧",  # an emoji family (ZWJ sequence)
    "\u202eevil\u202c",  # right-to-left override
    "e\u0301\u0301\u0301\u0301",  # stacked combining marks
    "a\u0000b",  # NUL
    "\ud800",  # a lone surrogate (escaped in JSON)
    "x" * 65,  # over the limit
    "🇺🇳" * 16,
    " ",
    "",
    "ok name",
]


def documented() -> tuple[set[str], set[int]]:
    text = DOCS.read_text()
    codes = set(re.findall(r"^\| `([a-z_]+)` \|", text, re.MULTILINE))
    closes = {int(c) for c in re.findall(r"\b(1000|1001|1008|1009|4\d{3})\b", text)} | {1000}
    return codes, closes


@dataclass
class Tally:
    sent: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)
    done: Counter[str] = field(default_factory=Counter)
    """What went as it should, where a phase counts it (e.g. resumes)."""

    def check(self, codes: set[str], closes: set[int]) -> None:
        for code in self.errors:
            if code not in codes:
                self.violations.append(f"undocumented error code {code!r}")
        for close in self.closes:
            if close not in closes:
                self.violations.append(f"undocumented close code {close}")


def server_stats(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss_kb": rss, "threads": threads, "fds": fds}


async def health(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(f"{base}/health") as reply:
        result: dict[str, Any] = await reply.json()
        return result


async def drain(ws: aiohttp.ClientWebSocketResponse, tally: Tally, idle: float = 0.3) -> None:
    """Reads until the server closes the socket or says nothing for `idle` seconds."""
    while True:
        try:
            message = await ws.receive(timeout=idle)
        except TimeoutError:
            return
        if message.type == aiohttp.WSMsgType.TEXT:
            data = json.loads(message.data)
            if data.get("type") == "error":
                tally.errors[data.get("code")] += 1
        elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                              aiohttp.WSMsgType.CLOSING):
            if ws.close_code is not None:
                tally.closes[ws.close_code] += 1
            return
        elif message.type == aiohttp.WSMsgType.ERROR:
            return


def hostile_batch(rng: random.Random, offer: str) -> Sequence[str | bytes]:
    """About 20 frames of one kind of abuse, for one socket."""
    kind = rng.choice(["json", "fields", "names", "sdp", "oversize", "flood", "binary"])
    if kind == "json":
        return [rng.choice(["{", "[]", "null", "1", '"x"', "{\"type\":", "\x00", "{}" * 500])
                for _ in range(20)]
    if kind == "fields":
        return [json.dumps(m) for m in [
            {"type": "join"}, {"type": "join", "room": 5, "name": "a", "lang": "eng"},
            {"type": "join", "room": "r/../x", "name": "a", "lang": "eng"},
            {"type": "join", "room": "r", "name": "a", "lang": "xx-nope"},
            {"type": "offer", "sdp": "v=0"}, {"type": "set_lang", "lang": "eng"},
            {"type": 7}, {"type": "leave", "extra": [1] * 100}, {"type": "dance"},
        ] * 2]
    if kind == "names":
        return [json.dumps({"type": "join", "room": f"soak{rng.randrange(50)}", "name": name,
                            "lang": "eng"}) for name in NAMES] + [
            json.dumps({"type": "leave"})]
    if kind == "sdp":
        join = json.dumps({"type": "join", "room": f"sdp{rng.randrange(50)}", "name": "s",
                           "lang": "eng"})
        bad = [
            "v=0\r\n", "not sdp", offer.replace("opus", "pcmu"),
            offer.replace("a=fingerprint", "a=x-fingerprint"), offer + "m=video 9 x\r\n",
            offer[: len(offer) // 2], "v=0\r\n" + "a=x\r\n" * 5000,
        ]
        return [join] + [json.dumps({"type": "offer", "sdp": sdp}) for sdp in bad]
    if kind == "oversize":
        return [json.dumps({"type": "join", "room": "r", "name": "n" * 70_000, "lang": "eng"})]
    if kind == "flood":
        return [json.dumps({"type": "set_lang", "lang": "eng"})] * 60
    return [bytes(rng.randrange(256) for _ in range(64)) for _ in range(5)]


async def real_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    sdp: str = pc.localDescription.sdp
    await pc.close()
    return sdp


async def hostile(session: aiohttp.ClientSession, base: str, count: int, tally: Tally) -> None:
    rng = random.Random(10)
    offer = await real_offer()
    semaphore = asyncio.Semaphore(20)

    async def one(frames: Sequence[str | bytes]) -> None:
        async with semaphore:
            try:
                ws = await session.ws_connect(f"{base}/ws", max_msg_size=0)
            except aiohttp.WSServerHandshakeError as error:
                tally.refused[f"http {error.status}"] += 1
                return
            reader = asyncio.create_task(drain(ws, tally, idle=1.0))
            for frame in frames:
                if ws.closed:
                    break
                try:
                    if isinstance(frame, bytes):
                        await ws.send_bytes(frame)
                    else:
                        await ws.send_str(frame)
                except (ConnectionError, RuntimeError):
                    break
            await reader
            await ws.close()

    batches = []
    while tally.sent < count:
        frames = hostile_batch(rng, offer)
        tally.sent += len(frames)
        batches.append(frames)
    await asyncio.gather(*(one(frames) for frames in batches))


async def next_message(
    ws: aiohttp.ClientWebSocketResponse, kinds: tuple[str, ...], tally: Tally
) -> dict[str, Any]:
    """The next message of one of `kinds`, counting errors; an `error` also ends the wait."""
    while True:
        message = await ws.receive()
        if message.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket ended: {message.type} {ws.close_code}")
        data: dict[str, Any] = json.loads(message.data)
        if data["type"] == "error":
            tally.errors[data["code"]] += 1
            return data
        if data["type"] in kinds:
            return data


async def negotiate(ws: aiohttp.ClientWebSocketResponse, tally: Tally) -> RTCPeerConnection:
    """offer -> answer -> ICE connected, with a fresh peer connection (as the page does
    after `joined` and after `resumed`)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def _state() -> None:
        if pc.connectionState == "connected":
            connected.set()

    try:
        pc.addTransceiver(SpeechTrack(), direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        await ws.send_json({"type": "offer", "sdp": pc.localDescription.sdp})
        async with asyncio.timeout(30):
            answer = await next_message(ws, ("answer",), tally)
            if answer["type"] != "answer":
                raise ConnectionError(f"offer refused: {answer.get('code')}")
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            await connected.wait()
    except BaseException:
        await pc.close()
        raise
    return pc


def cut(ws: aiohttp.ClientWebSocketResponse) -> None:
    """The network vanishes under the socket: no close frame, no `leave`."""
    ws._response.connection.transport.abort()  # type: ignore[union-attr]


async def cycle(session: aiohttp.ClientSession, base: str, index: int, tally: Tally) -> None:
    ws = await session.ws_connect(f"{base}/ws")
    await ws.send_json({"type": "join", "room": f"cycle{index % 7}", "name": f"c{index}",
                        "lang": "eng"})
    pc: RTCPeerConnection | None = None
    try:
        async with asyncio.timeout(30):
            joined = await next_message(ws, ("joined",), tally)
        if joined["type"] != "joined":
            raise ConnectionError(f"join refused: {joined.get('code')}")
        pc = await negotiate(ws, tally)
        if index % 2:
            await ws.send_json({"type": "leave"})
            await drain(ws, tally)
            await ws.close()
            await pc.close()
        else:  # abrupt: the socket vanishes, then the media
            cut(ws)
            await pc.close()
    except (TimeoutError, ConnectionError) as error:
        tally.violations.append(f"cycle {index}: {error!r}")
        if pc is not None:
            await pc.close()
        await ws.close()


async def cycles(session: aiohttp.ClientSession, base: str, count: int, tally: Tally) -> None:
    semaphore = asyncio.Semaphore(4)

    async def bounded(index: int) -> None:
        async with semaphore:
            await cycle(session, base, index, tally)

    await asyncio.gather(*(bounded(i) for i in range(count)))


async def idle_sockets(
    session: aiohttp.ClientSession, base: str, count: int, tally: Tally, pid: int
) -> dict[str, int]:
    sockets = []
    for _ in range(count):
        try:
            sockets.append(await session.ws_connect(f"{base}/ws"))
        except aiohttp.WSServerHandshakeError as error:
            tally.refused[f"http {error.status}"] += 1
    await asyncio.sleep(2.0)
    # The server may close some (a join timeout, a per-address cap): count how.
    held = server_stats(pid)
    for ws in sockets:
        with contextlib.suppress(TimeoutError, aiohttp.ClientError):
            while (message := await ws.receive(timeout=0.01)).type == aiohttp.WSMsgType.TEXT:
                data = json.loads(message.data)
                if data.get("type") == "error":
                    tally.refused[data.get("code")] += 1
        if ws.closed and ws.close_code is not None:
            tally.closes[ws.close_code] += 1
        await ws.close()
    held["accepted"] = len(sockets)
    return held


RECONNECT_WAITS = (0.5, 1.0, 2.0, 4.0)
"""The page's backoff before each attempt (client/reconnect.js), then 4 s until 30 s."""
GIVE_UP_SECONDS = 30.0


async def storm(session: aiohttp.ClientSession, base: str, clients: int, rounds: int,
                tally: Tally) -> None:
    """`clients` people in one room, talking, whose connections all drop at once, `rounds`
    times: each socket and peer connection is cut without a word, and each client comes
    back as the page does (client/reconnect.js, docs/protocol.md "Reconnecting"): after
    the backoff, a new socket sends `resume` with the last token, then a fresh offer. It
    must come back as the same participant every time; at the end everyone leaves."""
    rng = random.Random(7)

    @dataclass
    class Person:
        ws: aiohttp.ClientWebSocketResponse
        pc: RTCPeerConnection
        id: str
        token: str

    async def enter(index: int) -> Person:
        ws = await session.ws_connect(f"{base}/ws")
        await ws.send_json({"type": "join", "room": "storm", "name": f"s{index}",
                            "lang": "eng"})
        async with asyncio.timeout(30):
            joined = await next_message(ws, ("joined",), tally)
        if joined["type"] != "joined":
            await ws.close()
            raise ConnectionError(f"join refused: {joined.get('code')}")
        return Person(ws, await negotiate(ws, tally), joined["id"], joined["resume_token"])

    async def come_back(person: Person) -> None:
        cut(person.ws)
        await person.pc.close()
        deadline = time.monotonic() + GIVE_UP_SECONDS
        for attempt in range(100):
            wait = RECONNECT_WAITS[min(attempt, len(RECONNECT_WAITS) - 1)]
            await asyncio.sleep(wait * rng.uniform(0.8, 1.2))
            if time.monotonic() > deadline:
                raise ConnectionError(f"{person.id}: no resume within {GIVE_UP_SECONDS:g} s")
            try:
                ws = await session.ws_connect(f"{base}/ws")
            except aiohttp.ClientError:
                tally.refused["socket refused"] += 1
                continue
            await ws.send_json({"type": "resume", "resume_token": person.token})
            async with asyncio.timeout(30):
                resumed = await next_message(ws, ("resumed",), tally)
            if resumed["type"] != "resumed":
                await ws.close()
                if resumed.get("code") == "retry_later":
                    continue
                raise ConnectionError(f"{person.id}: {resumed.get('code')}")
            if resumed["id"] != person.id:
                tally.violations.append(f"{person.id} resumed as {resumed['id']}")
            person.ws, person.token = ws, resumed["resume_token"]
            person.pc = await negotiate(ws, tally)
            tally.done["resumed as themselves"] += resumed["id"] == person.id
            tally.done["attempts"] += attempt + 1
            return

    def failed(outcomes: list[Any]) -> bool:
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        tally.violations.extend(f"storm: {error!r}" for error in errors)
        return bool(errors)

    entered = await asyncio.gather(*(enter(i) for i in range(clients)), return_exceptions=True)
    people = [person for person in entered if isinstance(person, Person)]
    try:
        outcomes: list[Any] = list(entered)
        for _ in range(rounds):
            if failed(outcomes):
                break
            await asyncio.sleep(rng.uniform(0.2, 1.0))  # mid-meeting
            outcomes = await asyncio.gather(*(come_back(person) for person in people),
                                            return_exceptions=True)
        else:
            failed(outcomes)
    finally:
        for person in people:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await person.ws.send_json({"type": "leave"})
            await person.ws.close()
            await person.pc.close()


async def settle(session: aiohttp.ClientSession, base: str, idle: dict[str, Any]) -> dict[str, Any]:
    """Waits (up to a minute) for /health to come back to its idle counts, then for the
    server's next memory trim."""
    keys = ("sockets", "rooms", "participants", "peer_connections")
    now: dict[str, Any] = {}
    for _ in range(120):
        now = await health(session, base)
        if all(now[k] == 0 for k in keys) and now["tasks"] <= idle["tasks"]:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(TRIM_SECONDS + 1.0)
    return now


def line(title: str, stats: dict[str, int]) -> str:
    heap = (f"  python heap {stats['python_heap_bytes'] / 2**20:6.1f} MB"
            if "python_heap_bytes" in stats else "")
    return (f"  {title:<24} RSS {stats['rss_kb'] / 1024:7.1f} MB  threads {stats['threads']:3d}"
            f"  fds {stats['fds']:5d}{heap}")


async def settled_stats(session: aiohttp.ClientSession, base: str, pid: int) -> dict[str, int]:
    """/proc's figures, and the Python heap where the server traces it (`--trace-python`)."""
    stats = server_stats(pid)
    heap = (await health(session, base)).get("python_heap_bytes")
    return stats if heap is None else {**stats, "python_heap_bytes": heap}


async def soak(
    scale: float, system_malloc: bool = False, trace_python: bool = False,
    allocator: str = "system",
) -> int:
    offer_host_addresses(["127.0.0.1"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = await asyncio.create_subprocess_exec(
        sys.executable, *(["-X", "tracemalloc"] if trace_python else []), "app.py",
        "--no-translation", "--http", "--host", "127.0.0.1",
        "--port", str(port), "--ice-address", "127.0.0.1", "--log-level", "ERROR",
        "--max-participants", "200", "--memory-trim-interval", str(TRIM_SECONDS),
        "--allocator", allocator,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONMALLOC": "malloc"} if system_malloc else None,
    )
    assert process.stdout is not None and process.stderr is not None
    banner = await process.stdout.readline()
    if b"listening" not in banner:
        raise SystemExit(f"the server did not start: {(await process.stderr.read())[-2000:]!r}")
    errors_logged = asyncio.create_task(process.stderr.read())
    codes, closes = documented()
    connector = aiohttp.TCPConnector(limit=0)
    session = aiohttp.ClientSession(connector=connector)
    failures = 0
    try:
        # One small round of each phase first: what the server allocates once (imports,
        # codec tables, malloc arenas) is not a leak, so "before" is measured after it.
        for warm_up in (hostile(session, base, 200, Tally()), cycles(session, base, 6, Tally()),
                        storm(session, base, 4, 2, Tally())):
            await warm_up
        idle_health = await settle(session, base, {"tasks": 1_000_000})
        before = await settled_stats(session, base, process.pid)
        print(f"bench.soak: server pid {process.pid} on {idle_health['allocator']}, documented "
              f"error codes {sorted(codes)}, close codes {sorted(closes)}", flush=True)
        print(line("idle, after warm-up", before), flush=True)
        phases = [
            ("hostile messages", lambda t: hostile(session, base, int(10_000 * scale), t)),
            ("join/negotiate/leave", lambda t: cycles(session, base, int(300 * scale), t)),
            ("reconnect storm", lambda t: storm(session, base, 20, int(15 * scale) or 1, t)),
            (f"{int(1000 * scale)} idle sockets from 127.0.0.1",
             lambda t: idle_sockets(session, base, int(1000 * scale), t, process.pid)),
        ]
        # Twice: what the allocator keeps after the first pass (a burst's high-water mark:
        # arenas pinned by a few live objects, one malloc arena per thread that ever ran)
        # is reused by the second; a leak grows again.
        passes = []
        for number in (1, 2):
            print(f"pass {number}:", flush=True)
            for title, phase in phases:
                tally = Tally()
                started = time.monotonic()
                held: dict[str, int] | None = None
                try:
                    async with asyncio.timeout(PHASE_TIMEOUT):
                        held = await phase(tally)
                except TimeoutError:
                    tally.violations.append(f"did not finish in {PHASE_TIMEOUT:g} s")
                took = time.monotonic() - started
                tally.check(codes, closes)
                alive = process.returncode is None
                done = f"done {dict(tally.done)}, " if tally.done else ""
                upgraded = f"upgraded {held['accepted']}, " if held else ""
                print(f"- {title}: {took:.1f} s, sent {tally.sent or '-'}, {upgraded}errors "
                      f"{dict(tally.errors.most_common())}, closes {dict(tally.closes)}, "
                      f"refused {dict(tally.refused)}, {done}server "
                      f"{'alive' if alive else 'CRASHED'}", flush=True)
                if held:
                    print(line("while held", held), flush=True)
                for violation in tally.violations[:10]:
                    print(f"    VIOLATION {violation}", flush=True)
                failures += len(tally.violations) + (not alive)
                if not alive:
                    return 1
                after_health = await settle(session, base, idle_health)
                passes.append(await settled_stats(session, base, process.pid))
                print(line("after it settled", passes[-1]), flush=True)

        after = passes[-1]
        first_pass = passes[len(phases) - 1]
        leaks = {k: after_health[k] for k in ("sockets", "rooms", "participants",
                                              "peer_connections") if after_health[k]}
        extra_tasks = after_health["tasks"] - idle_health["tasks"]

        def growth(since: dict[str, int]) -> str:
            return f"{(after['rss_kb'] - since['rss_kb']) / since['rss_kb'] * 100:+.1f} %"

        print(f"  /health idle {idle_health} -> after {after_health}", flush=True)
        print(f"  leaks: {leaks or 'none'}, extra tasks {extra_tasks}, threads "
              f"{after['threads'] - before['threads']:+d}, fds {after['fds'] - before['fds']:+d}",
              flush=True)
        print(f"  RSS after two passes: {growth(before)} over the warm-up (goal within 5 %), "
              f"{growth(first_pass)} over the first pass (what a leak adds)", flush=True)
        if trace_python:
            grown = (after["python_heap_bytes"] - before["python_heap_bytes"]) / 2**20
            print(f"  Python heap after two passes: {grown:+.2f} MB over the warm-up, against "
                  f"RSS {(after['rss_kb'] - before['rss_kb']) / 1024:+.1f} MB", flush=True)
        failures += len(leaks) + (extra_tasks > 0)
    finally:
        await session.close()
        if process.returncode is None:
            process.terminate()
            await process.wait()
        logged = (await errors_logged).decode(errors="replace")
        tracebacks = logged.count("Traceback")
        print(f"  server exit {process.returncode}; ERROR lines logged "
              f"{logged.count(' ERROR ')}, tracebacks {tracebacks}", flush=True)
        causes = Counter(
            lines[-1] for block in logged.split("Traceback")[1:]
            if (lines := [x for x in block.splitlines() if x and not x.startswith(" ")])
        )
        for cause, times in causes.most_common(5):
            print(f"    {times} x {cause[:160]}", flush=True)
        offer_host_addresses(None)
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of each phase")
    parser.add_argument(
        "--system-malloc", action="store_true",
        help="run the server with PYTHONMALLOC=malloc: Python's objects in glibc's heap, "
        "whose free pages the server's memory trim returns (Python's own allocator keeps "
        "a burst's arenas while any object in them lives)",
    )
    parser.add_argument(
        "--trace-python", action="store_true",
        help="run the server under `python -X tracemalloc` and print its Python heap beside "
        "RSS: RSS that grows while the heap does not is allocator pages or C memory",
    )
    parser.add_argument(
        "--allocator", choices=ALLOCATORS, default="system",
        help="the server's --allocator (jemalloc: restarted on libjemalloc, Python's objects "
        "in it too)",
    )
    args = parser.parse_args()
    raise SystemExit(run(soak(0.1 if args.quick else 1.0, args.system_malloc,
                              args.trace_python, args.allocator)))


if __name__ == "__main__":
    main()
