"""One table, many phones, live: aiortc phones around a simulated table, a real server.

Each phone is a real aiortc client of a real server (a scripted translator, the real
Kokoro, real webrtcvad and table DSP) that runs in a process of its own
(`tests.fixtures.served`): sharing one event loop and GIL with the server, the simulation
fell seconds behind real time on two cores.

Each phone's microphone is fed, 20 ms at a time, by the streaming room simulator of
tests/acoustic_room.py: every talker and every other phone's loudspeaker through the
room's impulse responses, over a noise floor. Its loudspeaker plays into the room what
its aiortc client actually received, `PLAYOUT_DELAY` after the frame's media time (as a
phone's jitter buffer plays); a phone's own playback is not heard by its own microphone
(the browser's echo canceller's job).

Speakers are credited by microphone (no voiceprints): the phone that hears a sentence
best is its talker's own.

One session runs the whole conversation, scenario after scenario, to keep CI short:
the table is learned, then (a) one talker at a time, (d) a remote participant,
(b) two talkers at once, (f) double talk, (e) a phone leaving the table, with the
loudspeakers on all along, so (c) no caption may come from played-back audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from scipy.signal import firwin, lfilter

from media.frames import FRAME_SAMPLES
from media.resample import Decimator
from tests.acoustic_room import BLOCK, RATE, AcousticRoom, RoomStream, Signal, table_of
from tests.fixtures.served import ServedServer, served
from tests.fixtures.speech import compose
from tests.fixtures.webrtc import PeerFactory, Recorder, TestPeer, microphone_frame

GUARD = 240.0
"""Only a hang waits this long: every wait below ends on an event or a state."""

PLAYOUT_DELAY = 0.12
"""A phone plays each frame 120 ms after the least delayed frame's arrival, counted by the
frames' media time (network jitter buffer and audio output), inside the 60-200 ms a phone
takes."""

MAX_PLAYOUT_BACKLOG = BLOCK * 4
"""Past 80 ms more, a late loudspeaker drops samples, as a phone's playout would."""

OVERLAP_SLACK = 0.6
"""Seconds by which a caption's speech interval may miss its sentence's on either side:
the uplink, the VAD's pre-roll and hangover."""

TICK = BLOCK / RATE
Message = dict[str, Any]


class RoomMicrophone(MediaStreamTrack):
    """A phone's microphone: what the simulated room delivers to it, at 48 kHz."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._frames: asyncio.Queue[np.ndarray] = asyncio.Queue()
        self._pts = 0
        self._lowpass = firwin(63, 1 / 3) * 3
        self._state = np.zeros(len(self._lowpass) - 1)

    def hear(self, pcm16k: Signal) -> None:
        stuffed = np.zeros(len(pcm16k) * 3)
        stuffed[::3] = pcm16k
        pcm48k, self._state = lfilter(self._lowpass, 1.0, stuffed, zi=self._state)
        self._frames.put_nowait(pcm48k.astype(np.float32))

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pcm = await self._frames.get()
        frame = microphone_frame(pcm, self._pts)
        self._pts += len(pcm)
        return frame


class Loudspeaker(Recorder):
    """Records what the phone receives, and plays it into the room as a phone's jitter
    buffer does: each frame `PLAYOUT_DELAY` after its media time (RTP timestamp), counted
    from the earliest arrival seen. Played by arrival time instead, every scheduling
    delay of this busy test process moved the echo about, and no server could measure
    an echo path that a real phone's steady playout gives it."""

    def __init__(self) -> None:
        super().__init__()
        self._decimate = Decimator()
        self._due: deque[tuple[float, Signal]] = deque()
        self._playing = np.zeros(0, np.float32)
        self._anchor: float | None = None
        """Arrival time minus media time of the least delayed frame so far."""
        self.arrived_late = 0
        """Frames that came after their moment, and were played late."""

    def receive(self, frame: av.AudioFrame) -> None:
        arrived = time.monotonic()
        if frame.pts is None or frame.time_base is None:
            due = arrived + PLAYOUT_DELAY
        else:
            media_time = float(frame.pts * frame.time_base)
            offset = arrived - media_time
            self._anchor = offset if self._anchor is None else min(self._anchor, offset)
            due = self._anchor + media_time + PLAYOUT_DELAY
        super().receive(frame)
        self._due.append((due, self._decimate(self.chunks[-1])))

    def block(self, now: float) -> Signal:
        while self._due and self._due[0][0] <= now:
            due, pcm = self._due.popleft()
            self.arrived_late += now - due >= TICK
            self._playing = np.concatenate((self._playing, pcm))
        if len(self._playing) > BLOCK + MAX_PLAYOUT_BACKLOG:
            self._playing = self._playing[-(BLOCK + MAX_PLAYOUT_BACKLOG) :]
        out = np.zeros(BLOCK, np.float32)
        part = self._playing[:BLOCK]
        out[: len(part)] = part
        self._playing = self._playing[len(part) :]
        return out


@dataclass(eq=False)
class Sentence:
    talker: str
    audio: Signal
    started: float | None = None
    """Epoch seconds when its first sample reached the air."""
    ended: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Inbox:
    """Every message one peer gets, read all the time (as a page does)."""

    def __init__(self, peer: TestPeer) -> None:
        self.messages: list[Message] = []
        self.closed: tuple[Any, ...] | None = None
        self._new = asyncio.Event()
        self._task = asyncio.create_task(self._read(peer))

    async def _read(self, peer: TestPeer) -> None:
        while True:
            frame = await peer.inbox.get()
            if frame.type != aiohttp.WSMsgType.TEXT:
                self.closed = (frame.type, frame.data, frame.extra)
                return
            self.messages.append(json.loads(frame.data))
            self._new.set()

    async def wait_for(self, wanted: Callable[[Message], bool], since: int = 0) -> Message:
        async with asyncio.timeout(GUARD):
            while True:
                for message in self.messages[since:]:
                    if wanted(message):
                        return message
                since = len(self.messages)
                self._new.clear()
                await self._new.wait()

    def finals(self, lang: str, since: float) -> list[Message]:
        """Final captions in `lang` of speech that started at `since` (epoch s) or later."""
        return [
            m for m in self.messages
            if m["type"] == "caption" and m["final"] and m["lang"] == lang
            and m["start"] / 1000 >= since - OVERLAP_SLACK
        ]

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class SimulatedTable:
    """Drives the rooms' microphones and loudspeakers 20 ms at a time, in real time."""

    def __init__(self, rooms: list[AcousticRoom], phones: Mapping[str, TestPeer]) -> None:
        self._rooms = [(room, room.stream()) for room in rooms]
        self.phones = phones
        self._talking: dict[str, deque[Sentence]] = {}
        self._cursor: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.lateness: list[float] = []
        """Seconds each tick ran behind real time. A simulation that falls behind delivers
        the microphones in bursts and plays the loudspeakers late: its results say more
        about the machine than about the server, so every report carries this."""

    def timeliness(self) -> str:
        late = np.array(self.lateness or [0.0])
        p50, p99, worst = np.percentile(late, [50, 99, 100])
        behind = int(np.sum(late > 0.1))
        late_frames = {}
        for phone, peer in self.phones.items():
            assert isinstance(peer.recorder, Loudspeaker)
            late_frames[phone] = peer.recorder.arrived_late
        return (f"simulation behind real time: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms,"
                f" max {worst * 1000:.0f} ms; {behind} of {len(late)} ticks over 100 ms;"
                f" frames that reached a phone after their moment: {late_frames}")

    def stream_of(self, phone: str) -> RoomStream:
        return next(stream for room, stream in self._rooms if phone in room.phones)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def say(self, talker: str, speech: Signal) -> Sentence:
        sentence = Sentence(talker, speech)
        self._talking.setdefault(talker, deque()).append(sentence)
        return sentence

    async def _run(self) -> None:
        start = time.monotonic()
        tick = 0
        while True:
            await asyncio.sleep(max(0.0, start + tick * TICK - time.monotonic()))
            due = start + tick * TICK
            self.lateness.append(time.monotonic() - due)
            for room, stream in self._rooms:
                talkers = {name: self._talk(name) for name in room.talkers}
                speakers = {}
                for phone in room.phones:
                    recorder = self.phones[phone].recorder
                    assert isinstance(recorder, Loudspeaker)
                    # The room's clock is the tick count, as the microphones' RTP time
                    # is: a tick that runs late still plays what was due at its own time.
                    speakers[phone] = recorder.block(due)
                for phone, pcm in stream.block(talkers, speakers).items():
                    microphone = self.phones[phone].mic
                    assert isinstance(microphone, RoomMicrophone)
                    microphone.hear(pcm)
            tick += 1

    def _talk(self, talker: str) -> Signal:
        out = np.zeros(BLOCK, np.float32)
        queue = self._talking.get(talker)
        if not queue:
            return out
        sentence = queue[0]
        cursor = self._cursor.get(talker, 0)
        if cursor == 0:
            sentence.started = time.time()
        part = sentence.audio[cursor : cursor + BLOCK]
        out[: len(part)] = part
        cursor += BLOCK
        if cursor >= len(sentence.audio):
            sentence.ended = time.time()
            sentence.done.set()
            queue.popleft()
            cursor = 0
        self._cursor[talker] = cursor
        return out


async def spoken(*sentences: Sentence) -> None:
    async with asyncio.timeout(GUARD):
        for sentence in sentences:
            await sentence.done.wait()


QUIET_WITHIN = 30.0
IDLE_FOR = 2.0
"""A room still translating this long after the last sentence is translating itself:
played-back audio coming back as speech (c)."""


async def settled(
    server: ServedServer, room: str, inboxes: Mapping[str, Inbox], problems: list[str]
) -> None:
    """Until nothing has been in flight or queued for playout in `room` for `IDLE_FOR`:
    a sentence just spoken is not in flight until the VAD's hangover has ended it, and
    the last translation must leave the phones' loudspeakers. A room that does not get
    there within `QUIET_WITHIN` is a problem (c), and the test goes on."""
    idle_since = None
    deadline = time.monotonic() + QUIET_WITHIN
    while time.monotonic() < deadline:
        state = (await server.state())["rooms"].get(room)
        closes = {phone: inbox.closed for phone, inbox in inboxes.items()}
        assert state is not None, f"the room closed: everyone was disconnected: {closes}"
        if state["busy"]:
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= IDLE_FOR:
            return
        await asyncio.sleep(0.1)
    problems.append(f"(c) still translating {QUIET_WITHIN:.0f} s after the last sentence")


def overlaps(caption: Message, sentence: Sentence) -> bool:
    assert sentence.started is not None and sentence.ended is not None
    start, end = caption["start"] / 1000, caption["end"] / 1000
    return start < sentence.ended + OVERLAP_SLACK and end > sentence.started - OVERLAP_SLACK


def credited(caption: Message) -> str:
    participant: str = caption["speaker"]["participant"]
    return participant


@contextlib.asynccontextmanager
async def around_a_table(
    server: ServedServer, peer_factory: PeerFactory, people: Mapping[str, str]
) -> AsyncIterator[tuple[SimulatedTable, dict[str, TestPeer], dict[str, Inbox]]]:
    """Phones "p0".."p2" at one table, "r0" in another room; `people` maps each to a
    language. Yields once all are connected and the room simulation runs."""
    table, elsewhere = table_of(3), table_of(1, prefix="r", seed=1)
    peers: dict[str, TestPeer] = {}
    for phone, lang in people.items():
        peer = peers[phone] = await peer_factory(server)
        peer.mic, peer.recorder = RoomMicrophone(), Loudspeaker()
        await peer.join("table", phone, lang)
    for peer in peers.values():
        await peer.connect()
    inboxes = {phone: Inbox(peer) for phone, peer in peers.items()}
    for peer in peers.values():
        await peer.recorder.wait_for(FRAME_SAMPLES * 5)
    simulation = SimulatedTable([table, elsewhere], peers)
    simulation.start()
    try:
        yield simulation, peers, inboxes
    finally:
        await simulation.stop()
        for inbox in inboxes.values():
            await inbox.close()


async def tables_seen(server: ServedServer) -> list[frozenset[str]]:
    state = (await server.state())["rooms"]["table"]
    return [frozenset(group) for group in state["groups"]]


TRANSLATIONS = ("Muy bien.", "De acuerdo.", "Claro que sí.")
"""Short on purpose: what matters here is how often and from whom, not what."""

LINES = [
    "Good morning everyone, shall we start the meeting now?",
    "The budget for next year is almost ready for review.",
    "I think we should talk about the new office first.",
    "Can everybody hear me well from the other room?",
    "We have three new people joining the team next month.",
    "The client asked for a demo before the end of June.",
    "Let me share the numbers from the last quarter with you.",
    "That sounds good, but the deadline worries me a little.",
    "I am leaving the table now to take a phone call.",
    "Sorry, I had to step out, I am back in my office.",
]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.xfail(
    reason="flaky on a 2-core machine (2026-12-02). Since the echo returns (media/echo_return.py)"
    " the table code passed all 9 checks in 4 of 9 live runs (a CI run included); before them,"
    " since c16865d, 7 of 15, and before that 6 of 18, with the spread between hours larger"
    " than any change. Every failure traced since (4 of 4) is (f) double talk: a neighbour's"
    " loudspeaker, as loud at the talker's phone as the talker (the expected echo there -20 to"
    " -25 dBFS), starts over them; AEC3's suppressor takes the talker down 30-50 dB for up to"
    " 0.8 s, and the microphone across the table wins those words. Seen before, not since:"
    " (d)/(b) played-back fragments after a canceller restarts; (a) a talker's first 0.4-0.8 s"
    " also passed, ungated, on a neighbour's phone. These are issue 8's acceptance"
    " scenarios; remove this mark when they pass every run.",
    strict=False,
)
async def test_one_table_many_phones(peer_factory: PeerFactory, tmp_path: Path) -> None:
    async with served(TRANSLATIONS, tmp_path / "server.log") as server:
        await _converse(server, peer_factory)


async def _converse(server: ServedServer, peer_factory: PeerFactory) -> None:
    people = {"p0": "eng", "p1": "spa", "p2": "eng", "r0": "spa"}
    speech = [compose([line], rate=RATE, level=0.5).audio for line in LINES]
    problems: list[str] = []
    async with around_a_table(server, peer_factory, people) as (sim, peers, inboxes):
        ids = {phone: peer.id for phone, peer in peers.items()}
        lines = iter(speech * 3)
        check = Checker(inboxes, ids, problems, sim)

        # The table is learned from a few seconds of conversation, with no setup.
        at_table = frozenset(ids[p] for p in ("p0", "p1", "p2"))
        for _ in range(6):
            for talker in ("p0", "p1", "p2"):
                await spoken(sim.say(talker, next(lines)))
            if at_table in await tables_seen(server):
                break
        assert await tables_seen(server) == [at_table], sim.timeliness()
        for phone in ("p0", "p1", "p2"):
            message = await inboxes[phone].wait_for(
                lambda m, p=phone: m["type"] == "table"
                and set(m["members"]) == at_table - {ids[p]}
            )
            assert message["overrides"] == {}
        assert not any(m["type"] == "table" and m["members"] for m in inboxes["r0"].messages)
        await settled(server, "table", inboxes, problems)

        # (a) one talker at a time, then (d) the remote participant; loudspeakers on.
        for scenario, talker in (("a", "p0"), ("a", "p1"), ("a", "p2"), ("d", "r0")):
            since = time.time()
            sentence = sim.say(talker, next(lines))
            await spoken(sentence)
            await settled(server, "table", inboxes, problems)
            check(scenario, [sentence], since)
            room_state = (await server.state())["rooms"]["table"]
            print("  table stats", room_state["table_stats"], "mixer", room_state["mixer_stats"])

        # (b) two talkers at once, at opposite ends of the table.
        since = time.time()
        both = [sim.say("p0", next(lines)), sim.say("p1", next(lines))]
        await spoken(*both)
        await settled(server, "table", inboxes, problems)
        check("b", both, since, whole=False)

        # (f) double talk: p2 speaks while p0's phone plays a translation of p1.
        since = time.time()
        lead = sim.say("p1", next(lines))
        started = len(inboxes["p0"].messages)
        try:
            async with asyncio.timeout(QUIET_WITHIN):
                await inboxes["p0"].wait_for(lambda m: m["type"] == "latency", since=started)
        except TimeoutError:
            problems.append(f"(f) p1's translation did not start on p0 within {QUIET_WITHIN} s")
        over = sim.say("p2", next(lines))
        await spoken(lead, over)
        await settled(server, "table", inboxes, problems)
        check("f", [lead, over], since, whole=False)

        # (e) p2 leaves the table: its microphone no longer hears the room.
        sim.stream_of("p2").leave("p2", carrying="p2")
        for _ in range(6):
            for talker in ("p0", "p2"):
                await spoken(sim.say(talker, next(lines)))
            if all(ids["p2"] not in group for group in await tables_seen(server)):
                break
        if await tables_seen(server) != [frozenset({ids["p0"], ids["p1"]})]:
            problems.append(f"(e) tables after p2 left: {await tables_seen(server)}")
        await settled(server, "table", inboxes, problems)
        since = time.time()
        away = sim.say("p2", next(lines))
        await spoken(away)
        await settled(server, "table", inboxes, problems)
        check("e", [away], since)
        state = (await server.state())["rooms"]["table"]
    assert not problems, "\n".join([
        *problems, f"table stats: {state['table_stats']}",
        f"server mixer: {state['mixer_stats']}", sim.timeliness(),
    ])


class Checker:
    """Per listener language, each sentence must have exactly one final caption, credited
    to its talker, and no caption may be left over: a leftover that overlaps no sentence
    at all came from played-back audio (c); one that does is a duplicate or miscredited.

    Where talk overlaps other talk or a loudspeaker (`whole=False`: (b) and (f)), the
    issue asks that each sentence be translated, not that it stay in one piece: the gate
    that keeps the other talker out of a microphone also cuts its talker's pauses. Then
    a sentence may come in several captions, all credited to its talker."""

    def __init__(
        self, inboxes: Mapping[str, Inbox], ids: Mapping[str, str], problems: list[str],
        sim: SimulatedTable,
    ) -> None:
        self._sim = sim
        self._inboxes = inboxes
        self._ids = ids
        self._phones = {pid: phone for phone, pid in ids.items()}
        self._problems = problems

    def __call__(
        self, scenario: str, sentences: list[Sentence], since: float, whole: bool = True
    ) -> None:
        before = len(self._problems)
        self._check(scenario, sentences, since, whole)
        print(f"scenario ({scenario}):", self._problems[before:] or "as expected", flush=True)
        print(" ", self._sim.timeliness(), flush=True)
        if self._problems[before:]:
            for sentence in sentences:
                print(f"  said by {sentence.talker}: {sentence.started:.2f}-{sentence.ended:.2f}")
            for m in self._inboxes["p0"].finals("eng", since):
                who = self._phones.get(credited(m), credited(m))
                print(f"  eng caption by {who}: {m['start'] / 1000:.2f}-{m['end'] / 1000:.2f}")

    def _check(
        self, scenario: str, sentences: list[Sentence], since: float, whole: bool
    ) -> None:
        for listener, lang in (("p0", "eng"), ("p1", "spa")):
            finals = self._inboxes[listener].finals(lang, since)
            captions = {m["utterance"]: m for m in finals if "error" not in m}
            claimed: set[str] = set()
            for sentence in sentences:
                matching = [
                    uid for uid, m in captions.items()
                    if overlaps(m, sentence) and credited(m) == self._ids[sentence.talker]
                ]
                claimed.update(matching[:1] if whole else matching)
                if len(matching) != 1 if whole else not matching:
                    self._problems.append(
                        f"({scenario}) {sentence.talker}'s sentence: {len(matching)} captions"
                        f" in {lang}"
                    )
            for uid, m in captions.items():
                if uid in claimed:
                    continue
                source = "played-back audio (c)" if not any(
                    overlaps(m, s) for s in sentences
                ) else "a duplicate or miscredit"
                self._problems.append(
                    f"({scenario}) a {lang} caption credited to "
                    f"{self._phones.get(credited(m), credited(m))}, from {source}"
                )
