"""End-of-speech to first translated packet, per stage, with 1, 4 and 10 simultaneous speakers.

    .venv/bin/python -m bench.latency             # tiny model: 1, 4, 10 speakers; then real size
    .venv/bin/python -m bench.latency --quick     # smoke run: 1 and 2 speakers, 2 utterances
    .venv/bin/python -m bench.latency --speakers 10 --rounds 20 --real-size-utterances 0
    .venv/bin/python -m bench.latency --device cuda --dtype bfloat16   # a GPU host
    .venv/bin/python -m bench.latency --loss 1    # lag before/after a lost uplink packet
    .venv/bin/python -m bench.latency --engine cascade --speakers 1,4 --utterances 8

`--engine cascade` runs the cascade engine (real whisper-base int8 from .assets/, which
also writes the English itself, and a tiny random NLLB converted with CTranslate2) and then
(unless `--skip-tiny`) the tiny SeamlessM4T on the same speech, for figures side by side: a
Spanish speaker (real Kokoro ef_dora sentences of about 3 s, no commas) and an English
listener.

The server (production `create_app` + `mount_translation`, on loopback) runs in its own
process, so the clients' aiortc work does not share its event loop or GIL; this process
holds the aiortc clients. Both read the same `time.monotonic()` (CLOCK_MONOTONIC is
system-wide), so client and server times subtract directly. They do share the machine's
cores: each table says how much CPU each process took. To keep the clients light,
listeners offer recvonly and received RTP is timestamped, not decoded (`--heard` decodes).

Engines: a tiny random-weight SeamlessM4T v2 (tests/fixtures/seamless.py), the real Kokoro
int8 weights (.assets/, `python -m ai.models fetch-test-assets`), a random-weight
WeSpeaker, and the production webrtcvad segmenter. `--real-size-utterances` more
utterances with one speaker run on SeamlessM4T v2-large built from its default config with
random weights (bench/models.py), bf16 where the CPU has native bf16 (AMX / AVX-512 bf16),
else fp32; its tokenizer is the tiny checkpoint's, reading the large vocabulary's ids modulo
its own size (only the words differ; the compute is the large model's). Random weights
never emit end-of-sequence, so every row decodes its whole token budget (8 tokens per
second of speech + 10), about twice what a trained model decodes.

Topology: one room per speaker, each with that speaker (English) and one listener
(Spanish, no microphone) who sent `set_mix` original=0, so the listener's track carries
nothing but the translation. A round: every speaker starts a distinct espeak-ng sentence
(no commas, so the VAD sees one utterance) at the same moment; the round ends when every
listener has the translation and the server is idle (nothing in flight, playouts empty),
so no round queues behind the previous one. Each scenario runs ceil(utterances / speakers) rounds
(20 utterances: 20, 5 and 2 rounds); `--rounds` fixes the count instead.

Definitions (all milliseconds, per utterance; p50/p95 are numpy linear-interpolated
percentiles over the utterances measured):
- total: from the moment the speaker's track handed aiortc the frame holding its last
  voiced sample, to the arrival at the listener's RTP receiver of the first packet that is
  not the server's pre-encoded silence packet (the first translated packet). With
  `--heard`, `heard` is the same to the first decoded frame above -60 dBFS out of the
  listener's aiortc track (its default 4-packet receive jitter buffer: a client artefact).
- stages: from the server's `latency` message (LAST_VOICED -> VAD_END -> TRANSLATED ->
  FIRST_TTS -> FIRST_SENT, voiceprint in parallel with translation), plus uplink (client
  sent -> server got the last voiced frame) and downlink (FIRST_SENT -> packet arrived).
- model compute: time inside model calls on this utterance's critical path: the
  translator batch call that carried it (the whole batch's duration), its voiceprint only
  where it outlasted translation (pipeline waits for it), and Kokoro's first chunk.
- queueing: time the utterance waited while that model was busy with other utterances
  (translator batches, voiceprints, Kokoro chunks of others: one thread each, so waits
  are exact overlaps of intervals).
- overhead = total - model compute - VAD hangover (the issue's definition; it includes
  queueing). The hangover subtracted is the configured 300 ms: a measured hangover stage
  longer than that means the VAD feeder ran late, which is overhead ("VAD late").
  overhead without queueing subtracts queueing too; it is what the server's plumbing
  (transport, loop hops, batching window, playout tick, a starved event loop) costs. Its
  parts are printed with it and add up to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import av
import numpy as np
from aiohttp import web
from aiortc import RTCRtpReceiver

from ai.vad import VadSettings
from ai.worker import PriorityWorker
from bench.running import run
from media.frames import FRAME_SAMPLES, MIX_RATE
from media.ice import offer_host_addresses
from media.inbound import rms_dbfs
from media.opus import silence_packet
from tests.fixtures.processes import free_port, stop_process
from tests.fixtures.speech import Speech, compose
from tests.fixtures.webrtc import Recorder, SpeechTrack, TestPeer

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = ["127.0.0.1"]
SPEAKER_LANG, LISTENER_LANG = "eng", "spa"
SPANISH_SPEECH = False
"""`--engine cascade`: a Spanish speaker (Kokoro) and an English listener instead."""
HEARD_DBFS = -60.0
ROUND_TIMEOUT = 300.0
IDLE_TIMEOUT = 120.0
GOAL_MS = 50.0
HANGOVER_MS = VadSettings().hangover * 1000
"""The VAD hangover the overhead excludes: the configured silence, a design constant. A
measured stage longer than this (a feeder behind its queue) is overhead ("VAD late")."""

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Where is the train station from here please.",
    "We will meet again tomorrow morning at the old library.",
    "My sister bought a new bicycle for her long ride to work.",
    "The weather today is lovely so we will walk along the river.",
    "Please send me the report before the meeting starts.",
    "Our team finished the project two weeks ahead of schedule.",
    "The children played football in the park until it got dark.",
    "I would like a cup of coffee with a little milk.",
    "The museum opens at nine and closes early on Sundays.",
    "He forgot his umbrella and got wet on the way home.",
    "Could you tell me how much this green jacket costs.",
]


SPANISH_SENTENCES = [
    "El tren sale de la estación a las tres de la tarde.",
    "Mañana tenemos una reunión con el nuevo equipo.",
    "Necesitamos terminar el informe antes del viernes.",
    "La comida está lista en la sala de reuniones.",
    "Hoy vamos a hablar del nuevo proyecto de la empresa.",
    "Por favor cierra la puerta cuando salgas de la oficina.",
    "El cliente quiere ver los resultados esta misma semana.",
    "Gracias a todos por venir tan temprano esta mañana.",
]
"""About 3 s each in Kokoro's ef_dora; no commas, so the VAD sees one utterance."""


# ================================================================ server (subprocess)

_SPEAKING: contextvars.ContextVar[str | None] = contextvars.ContextVar("speaking", default=None)
"""The utterance whose translation the current task is speaking (for Kokoro's worker)."""

Span = tuple[float, float]


def _overlap(window: Span, spans: Sequence[Span]) -> float:
    """Seconds of `window` covered by `spans` (which never overlap: one thread each)."""
    a, b = window
    return sum(max(0.0, min(b, end) - max(a, start)) for start, end in spans)


class Probe:
    """Times the model calls of a running server without changing what it does.

    Each wrapper stands in on an instance attribute the production code already calls:
    the translator's batch function (caught by the micro-batcher when the pipeline is
    built) and its blocking engine call, the batcher's `submit`, the embedder's blocking
    `embed`, the pipeline's speech block, Kokoro's worker executor, and the metrics'
    `observe_utterance` (called once per utterance, at its first packet).
    """

    def __init__(self) -> None:
        self.submitted: dict[int, float] = {}
        self.batches: dict[int, dict[str, float]] = {}
        """id(utterance audio) -> dispatch, compute start/end, size of the batch it rode."""
        self.translator_busy: list[Span] = []
        self.embeds: dict[int, Span] = {}
        self.kokoro: list[tuple[str | None, float, float, float, int]] = []
        """(utterance id, submitted, started, ended, characters) per synthesized piece."""
        self.speak_entered: dict[str, float] = {}
        self.finished: list[Any] = []
        self._keep: dict[int, Any] = {}
        """Audio arrays by id, so an id is not reused while we key records on it."""

    # -- wrappers -------------------------------------------------------------------------
    def wrap_translator(self, translator: Any) -> None:
        batch_call = translator.translate_speech

        async def timed_batch(batch: Any, *args: Any, **kwargs: Any) -> Any:
            dispatch = time.monotonic()
            result = await batch_call(batch, *args, **kwargs)
            start, end = self.translator_busy[-1]
            for audio, *_ in batch:
                self.batches[id(audio)] = {
                    "dispatch": dispatch, "start": start, "end": end, "size": len(batch)
                }
            return result

        translator.engine.translate_speech = _timed(
            translator.engine.translate_speech,
            lambda jobs, start, end: self.translator_busy.append((start, end)),
        )
        translator.translate_speech = timed_batch

    def wrap_embedder(self, embedder: Any) -> None:
        def note(audio: Any, start: float, end: float) -> None:
            self.embeds[id(audio)] = (start, end)

        embedder.embed = _timed(embedder.embed, note)

    def wrap_tts(self, tts: Any) -> None:
        tts._worker = _TimedWorker(tts._worker, self.kokoro)

    def wrap_live(self, live: Any) -> None:
        engines = live._engines
        submit = engines.translate.batcher.submit

        async def timed_submit(item: Any) -> Any:
            self.submitted[id(item[0])] = time.monotonic()
            self._keep[id(item[0])] = item[0]
            return await submit(item)

        engines.translate.batcher.submit = timed_submit
        engines.speak = _TimedSpeak(engines.speak, self.speak_entered)
        metrics = live._metrics
        observe = metrics.observe_utterance

        def observed(utterance: Any) -> None:
            observe(utterance)
            self.finished.append(utterance)

        metrics.observe_utterance = observed

    # -- records ----------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """Raw stamps and the compute / queueing split of every utterance heard so far."""
        out = []
        for utt in self.finished:
            key = id(utt.audio)
            s = dict(utt.stamps)
            batch = self.batches.get(key)
            submitted = self.submitted.get(key)
            entered = self.speak_entered.get(utt.id)
            own = [k for k in self.kokoro if k[0] == utt.id]
            if batch is None or submitted is None or entered is None or not own:
                out.append({"id": utt.id, "source": utt.source_id, "stamps": s,
                            "incomplete": True})
                continue
            first = min(own, key=lambda k: k[2])
            others_tts = [(k[2], k[3]) for k in self.kokoro if k[0] != utt.id]
            others_tr = [b for b in self.translator_busy if b != (batch["start"], batch["end"])]
            embed = self.embeds.get(key)
            others_embed = [span for k, span in self.embeds.items() if k != key]
            vp_window = (s["translated"], max(s["translated"], s.get("voiceprint", 0.0)))
            out.append({
                "id": utt.id,
                "source": utt.source_id,
                "room": utt.room,
                "seconds": utt.duration,
                "stamps": s,
                "submitted": submitted,
                "batch": batch,
                "embed": embed,
                "speak_entered": entered,
                "first_chunk": {"submitted": first[1], "start": first[2], "end": first[3],
                                "chars": first[4]},
                "pieces": len(own),
                "text_chars": sum(len(t) for t in utt.translations.values()),
                "translate_compute": batch["end"] - batch["start"],
                "translate_queue": _overlap((submitted, batch["start"]), others_tr),
                "voiceprint_compute": _overlap(vp_window, [embed] if embed else []),
                "voiceprint_queue": _overlap(vp_window, others_embed),
                "kokoro_compute": first[3] - first[2],
                "kokoro_queue": _overlap((entered, first[2]), others_tts),
            })
        return out

    def clear(self) -> None:
        self.finished.clear()
        self.submitted.clear()
        self.batches.clear()
        self.embeds.clear()
        self.speak_entered.clear()
        self._keep.clear()
        now = time.monotonic()
        self.kokoro[:] = [k for k in self.kokoro if k[3] > now - 60]
        self.translator_busy[:] = [b for b in self.translator_busy if b[1] > now - 60]


def _timed(fn: Callable[..., Any], note: Callable[..., None]) -> Callable[..., Any]:
    """`fn`, calling `note(first argument, start, end)` in monotonic time after each call."""

    def timed(first: Any, *rest: Any) -> Any:
        start = time.monotonic()
        try:
            return fn(first, *rest)
        finally:
            note(first, start, time.monotonic())

    return timed


class _TimedWorker:
    """Kokoro's one-thread worker, noting which utterance each piece is for and when it ran."""

    def __init__(
        self, inner: PriorityWorker, log: list[tuple[str | None, float, float, float, int]]
    ) -> None:
        self._inner = inner
        self._log = log

    def submit(self, priority: int, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        utterance = _SPEAKING.get()
        submitted = time.monotonic()

        def note(piece: Any, start: float, end: float) -> None:
            chars = len(piece) if isinstance(piece, str) else 0
            self._log.append((utterance, submitted, start, end, chars))

        return self._inner.submit(priority, _timed(fn, note), *args)

    def shutdown(self) -> None:
        self._inner.shutdown()


class _TimedSpeak:
    """The pipeline's speech block, marking when an utterance asks for speech."""

    def __init__(self, inner: Any, entered: dict[str, float]) -> None:
        self._inner = inner
        self._entered = entered

    def speaks(self, lang: str) -> bool:
        return bool(self._inner.speaks(lang))

    async def __call__(self, utterance: Any, lang: str, *args: Any) -> None:
        self._entered.setdefault(utterance.id, time.monotonic())
        token = _SPEAKING.set(utterance.id)
        try:
            await self._inner(utterance, lang, *args)
        finally:
            _SPEAKING.reset(token)


class _FoldedTokenizer:
    """The tiny checkpoint's tokenizer, reading a larger vocabulary's ids modulo its size."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._size = len(inner)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner(*args, **kwargs)

    def batch_decode(self, ids: Any, **kwargs: Any) -> Any:
        return self._inner.batch_decode(ids % self._size, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def load_engines(model: str, device: str, dtype: str, folder: Path) -> Any:
    from ai.models import fetch_test_assets
    from ai.translator import SeamlessTranslator
    from signaling.translation import LoadedEngines
    from tests.fixtures.seamless import build_tiny_seamless

    if model == "cascade":
        from ai.translator import CascadeTranslator
        from tests.fixtures.cascade import build_random_nllb

        assets = fetch_test_assets(ROOT / ".assets")
        translator: Any = CascadeTranslator.load(
            assets.whisper_base, build_random_nllb(folder / "tiny-nllb"), device=device
        )
        return LoadedEngines(translator, _kokoro(), _random_embedder(folder, device))
    tiny = build_tiny_seamless(folder / "tiny-seamless")
    if model == "tiny":
        translator = SeamlessTranslator.load(tiny, device=device, dtype=dtype)
    else:
        from transformers import AutoProcessor, GenerationConfig

        from ai.seamless import SeamlessM4T, pick_device, pick_dtype
        from bench.models import random_seamless

        where = pick_device(device)
        name = "int8" if dtype == "int8" else str(pick_dtype(where, dtype)).split(".")[-1]
        large = random_seamless(str(where), name)
        large.generation_config = GenerationConfig.from_pretrained(tiny)
        engine = SeamlessM4T(large, AutoProcessor.from_pretrained(tiny))
        engine.tokenizer = _FoldedTokenizer(engine.tokenizer)
        translator = SeamlessTranslator(engine)
    return LoadedEngines(translator, _kokoro(), _random_embedder(folder, device))


def _kokoro() -> Any:
    from ai.models import fetch_test_assets
    from ai.tts import KokoroSettings, KokoroTTS

    assets = fetch_test_assets(ROOT / ".assets")
    return KokoroTTS(KokoroSettings(
        assets.kokoro_model, assets.kokoro_voices, ja_dictionary=assets.ja_dictionary
    ))


def _random_embedder(folder: Path, device: str) -> Any:
    from ai.voiceprint import PyannoteEmbedder
    from tests.fixtures.pyannote import save_random_wespeaker

    return PyannoteEmbedder(
        save_random_wespeaker(folder / "wespeaker"), device="cuda" if "cuda" in device else "cpu"
    )


def describe_model(translator: Any) -> str:
    engine = translator.engine
    if hasattr(engine, "ears"):
        ears = engine.ears.model
        return (f"whisper-base {ears.device} {ears.compute_type} + tiny NLLB, "
                f"English by {engine.english_by}")
    params = sum(p.numel() for p in engine.model.parameters()) / 1e9
    return f"{params:.3g} B parameters, {engine.device.type} {str(engine.dtype).split('.')[-1]}"


async def serve(port: int, model: str, device: str, dtype: str) -> None:
    from signaling.translation import mount_translation
    from signaling.web import ServerSettings, create_app

    ready_out, sys.stdout = sys.stdout, sys.stderr  # stdout carries only "ready"
    probe = Probe()
    with tempfile.TemporaryDirectory(prefix="babblefish-latency-") as folder:
        loaded = load_engines(model, device, dtype, Path(folder))
    probe.wrap_translator(loaded.translator)
    probe.wrap_embedder(loaded.embedder)
    probe.wrap_tts(loaded.tts)
    app = create_app(ServerSettings(max_participants=4, ice_addresses=LOOPBACK))
    live = mount_translation(app, loaded, owns_engines=True, warm=True)
    probe.wrap_live(live)
    lag: list[float] = []

    async def watch_lag() -> None:
        while True:
            due = time.monotonic() + 0.05
            await asyncio.sleep(0.05)
            lag.append(max(0.0, time.monotonic() - due))

    async def state(request: web.Request) -> web.Response:
        if request.query.get("reset"):
            lag.clear()
        rooms = list(live.rooms.values())
        mixers = [r.room.mixer.stats for r in rooms]
        return web.json_response({
            "in_flight": sum(r.pipeline.in_flight for r in rooms),
            "awaiting": sum(len(r.awaiting) for r in rooms),
            "playout_seconds": sum(p.queued_seconds for r in rooms for p in r.playouts.values()),
            "late_ticks": sum(m.late_ticks for m in mixers),
            "skipped_ticks": sum(m.skipped_ticks for m in mixers),
            "underrun_seconds": sum(p.underruns for r in rooms for p in r.playouts.values())
            * FRAME_SAMPLES / MIX_RATE,
            "loop_lag_ms": [round(x * 1000, 2) for x in lag],
            "model": describe_model(loaded.translator),
            "kokoro_rate": loaded.tts.pace.rate(),
        })

    async def records(request: web.Request) -> web.Response:
        found = probe.records()
        if request.query.get("clear"):
            probe.clear()
        return web.json_response(found)

    app.router.add_get("/bench/state", state)
    app.router.add_get("/bench/records", records)
    runner = web.AppRunner(app)
    await runner.setup()  # runs the warm-up
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    watcher = asyncio.create_task(watch_lag())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", file=ready_out, flush=True)
    await stop.wait()
    watcher.cancel()
    await runner.cleanup()


# ================================================================ clients (this process)


class TimedSpeechTrack(SpeechTrack):
    """A `SpeechTrack` that notes when it handed aiortc the frame with the last voiced sample."""

    def __init__(self) -> None:
        super().__init__(None)
        self._voiced_end = 0
        self.last_voiced_sent: float | None = None

    def say(self, speech: Speech) -> None:
        self._audio = speech.audio.astype(np.float32)
        self._voiced_end = round(speech.voiced[-1][1] * speech.rate)
        self.last_voiced_sent = None
        self.play()

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()
        end = self._cursor  # just past the samples this frame carried
        if self.last_voiced_sent is None and end - FRAME_SAMPLES < self._voiced_end <= end:
            self.last_voiced_sent = time.monotonic()
        return frame


class TimedRecorder(Recorder):
    """A `Recorder` that notes the first decoded frame above `HEARD_DBFS` once armed."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.first_heard: float | None = None
        self.heard = asyncio.Event()

    def arm(self) -> None:
        self.armed, self.first_heard = True, None
        self.heard.clear()

    def take(self, pcm: np.ndarray) -> None:
        if self.armed and self.first_heard is None and rms_dbfs(pcm) > HEARD_DBFS:
            self.first_heard = time.monotonic()
            self.heard.set()
        self.samples += len(pcm)  # the audio itself is not kept


class PacketWatch:
    """Arrival of the first RTP packet that is not the server's silence packet, once armed.

    Unless `decode`, the packet goes no further (as in bench/fanout.py): aiortc's receive
    path in Python (jitter buffer, decoder, track queue) costs the clients, which share the
    server's cores, a lot more than noting the arrival does.
    """

    silence: ClassVar[bytes] = b""
    by_receiver: ClassVar[dict[int, PacketWatch]] = {}

    def __init__(self, decode: bool = False) -> None:
        self.decode = decode
        self.armed = False
        self.first: float | None = None
        self.arrived = asyncio.Event()

    def arm(self) -> None:
        self.armed, self.first = True, None
        self.arrived.clear()

    def saw(self, payload: bytes) -> None:
        if self.armed and self.first is None and payload != self.silence:
            self.first = time.monotonic()
            self.arrived.set()


_handle_rtp_packet = RTCRtpReceiver._handle_rtp_packet


async def _watched_rtp_packet(self: RTCRtpReceiver, packet: Any, arrival_time_ms: int) -> None:
    watch = PacketWatch.by_receiver.get(id(self))
    if watch is not None:
        watch.saw(packet.payload)
        if not watch.decode:
            return
    await _handle_rtp_packet(self, packet, arrival_time_ms)


class BenchPeer(TestPeer):
    """A `TestPeer` whose microphone and recorder keep the times the bench needs."""

    __test__ = False

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        super().__init__(ws)
        self.mic: TimedSpeechTrack = TimedSpeechTrack()
        self.recorder: TimedRecorder = TimedRecorder()


@dataclasses.dataclass
class News:
    """What one listener got in one round."""

    latency: dict[str, Any] | None = None
    latency_at: float | None = None
    utterances: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)


class BenchRoom:
    """One speaker (English) and one listener (Spanish, translation only) in their own room."""

    def __init__(self, speaker: BenchPeer, listener: BenchPeer, decode: bool) -> None:
        self.speaker, self.listener = speaker, listener
        self.decode = decode
        self.news = News()
        self._got = asyncio.Event()
        self.packets = PacketWatch(decode)
        assert listener.receiver is not None and speaker.receiver is not None
        PacketWatch.by_receiver[id(listener.receiver)] = self.packets
        PacketWatch.by_receiver[id(speaker.receiver)] = PacketWatch()  # hears only silence
        self._tasks = [asyncio.create_task(self._read(listener)),
                       asyncio.create_task(self._read(speaker))]

    @classmethod
    async def open(
        cls, session: aiohttp.ClientSession, url: str, name: str, decode: bool
    ) -> BenchRoom:
        speaker = BenchPeer(await session.ws_connect(url))
        listener = BenchPeer(await session.ws_connect(url))
        await speaker.join(name, f"{name}-speaker", SPEAKER_LANG)
        await listener.join(name, f"{name}-listener", LISTENER_LANG)
        await speaker.connect()
        await listener.connect(microphone=False)
        await listener.send({"type": "set_mix", "original": 0})
        return cls(speaker, listener, decode)

    async def _read(self, peer: BenchPeer) -> None:
        with contextlib.suppress(aiohttp.ClientError):
            while True:
                # No guard: at 10 speakers a translation may come over a minute after the
                # last message, longer than `TestPeer.next_frame` waits.
                message = await peer.inbox.get()
                if message.type != aiohttp.WSMsgType.TEXT:
                    return
                if peer is not self.listener:
                    continue
                data = json.loads(message.data)
                if data["type"] == "latency" and self.news.latency is None:
                    self.news.latency, self.news.latency_at = data, time.monotonic()
                    self._got.set()
                elif data["type"] == "caption":
                    if data["utterance"] not in self.news.utterances:
                        self.news.utterances.append(data["utterance"])
                    if "error" in data or data.get("dropped"):
                        self.news.errors.append(data.get("error") or "dropped")

    def say(self, speech: Speech) -> None:
        """Arms the listener's detectors; the speaker starts on `start`."""
        self.news, self._got = News(), asyncio.Event()
        self.listener.recorder.arm()
        self.packets.arm()
        self._speech = speech

    def start(self) -> None:
        self.speaker.mic.say(self._speech)

    @property
    def first_packet(self) -> float | None:
        return self.packets.first

    async def done(self) -> None:
        """Until the listener has the `latency` message, the first translated packet and
        the first audible frame."""
        await self._got.wait()
        await self.packets.arrived.wait()
        if self.decode:
            await self.listener.recorder.heard.wait()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for peer in (self.speaker, self.listener):
            if peer.receiver is not None:
                PacketWatch.by_receiver.pop(id(peer.receiver), None)
            await peer.close()


@cache
def sentence(index: int) -> Speech:
    if SPANISH_SPEECH:
        return spanish_sentence(index % len(SPANISH_SENTENCES))
    return compose([SENTENCES[index % len(SENTENCES)]], rate=MIX_RATE)


@cache
def spanish_sentence(index: int) -> Speech:
    audio = _client_kokoro().synthesize(SPANISH_SENTENCES[index], "spa", "ef_dora")
    voiced = np.flatnonzero(np.abs(audio) > 0.01)
    return Speech(audio, MIX_RATE, [(voiced[0] / MIX_RATE, (voiced[-1] + 1) / MIX_RATE)])


@cache
def _client_kokoro() -> Any:
    return _kokoro()


@dataclasses.dataclass
class Sample:
    """One utterance, client and server figures merged (milliseconds)."""

    speakers: int
    round: int
    figures: dict[str, float]


@dataclasses.dataclass
class Scenario:
    title: str
    speakers: int
    rounds: int
    samples: list[Sample]
    failures: list[str]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    seconds: float
    server: dict[str, Any]
    cpu: tuple[float, float]
    """Cores used on average over the scenario: (server process, this client process)."""


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one when None), every thread."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def merge(speakers: int, round_: int, room: BenchRoom, record: dict[str, Any]) -> Sample:
    ms = 1000.0
    s = record["stamps"]
    sent = room.speaker.mic.last_voiced_sent
    packet = room.first_packet
    heard = room.listener.recorder.first_heard if room.decode else None
    assert sent is not None and packet is not None
    latency = room.news.latency or {}
    stages = latency.get("stages", {})
    batch, first = record["batch"], record["first_chunk"]
    vp_end = max(s["translated"], s.get("voiceprint", s["translated"]))
    f: dict[str, float] = {
        "total": (packet - sent) * ms,
        "heard": math.nan if heard is None else (heard - sent) * ms,
        "uplink": (s["last_voiced"] - sent) * ms,
        "vad_hangover": (s["vad_end"] - s["last_voiced"]) * ms,
        "voiceprint": float(stages.get("voiceprint_ms") or 0.0),
        "translate": (s["translated"] - s["vad_end"]) * ms,
        "tts": (s["first_tts"] - s["translated"]) * ms,
        "playout": (s["first_sent"] - s["first_tts"]) * ms,
        "downlink": (packet - s["first_sent"]) * ms,
        "server_total": float(latency.get("total_ms", math.nan)),
        "translate_compute": record["translate_compute"] * ms,
        "voiceprint_compute": record["voiceprint_compute"] * ms,
        "kokoro_compute": record["kokoro_compute"] * ms,
        "translate_queue": record["translate_queue"] * ms,
        "voiceprint_queue": record["voiceprint_queue"] * ms,
        "kokoro_queue": record["kokoro_queue"] * ms,
        "batch_size": float(batch["size"]),
        "kokoro_chars": float(first["chars"]),
        "kokoro_pieces": float(record["pieces"]),
        # the plumbing between them, all on the critical path
        "to_batcher": (record["submitted"] - s["vad_end"]) * ms,
        "batch_window": (batch["dispatch"] - record["submitted"]) * ms
        - record["translate_queue"] * ms,
        "translator_hops": ((batch["start"] - batch["dispatch"])
                            + (s["translated"] - batch["end"])) * ms,
        "to_speech": (record["speak_entered"] - s["translated"]) * ms
        - (record["voiceprint_compute"] + record["voiceprint_queue"]) * ms,
        "kokoro_hops": ((first["start"] - record["speak_entered"])
                        + (s["first_tts"] - first["end"])) * ms - record["kokoro_queue"] * ms,
    }
    f["voiceprint_beyond_translate"] = (vp_end - s["translated"]) * ms
    f["model_compute"] = f["translate_compute"] + f["voiceprint_compute"] + f["kokoro_compute"]
    f["queueing"] = f["translate_queue"] + f["voiceprint_queue"] + f["kokoro_queue"]
    f["vad_late"] = f["vad_hangover"] - HANGOVER_MS
    f["overhead"] = f["total"] - f["model_compute"] - HANGOVER_MS
    f["overhead_no_queue"] = f["overhead"] - f["queueing"]
    parts = ("uplink", "vad_late", "to_batcher", "batch_window", "translator_hops", "to_speech",
             "kokoro_hops", "playout", "downlink")
    f["parts_residual"] = f["overhead_no_queue"] - sum(f[p] for p in parts)
    return Sample(speakers, round_, f)


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as reply:
        reply.raise_for_status()
        return await reply.json()


async def wait_idle(session: aiohttp.ClientSession, base: str) -> None:
    async with asyncio.timeout(IDLE_TIMEOUT):
        while True:
            state = await get_json(session, f"{base}/bench/state")
            if not (state["in_flight"] or state["awaiting"] or state["playout_seconds"]):
                return
            await asyncio.sleep(0.1)


async def run_scenario(
    session: aiohttp.ClientSession, server: tuple[str, int], title: str, speakers: int,
    rounds: int, tag: str, progress: Callable[[str], None], decode: bool = False,
) -> Scenario:
    base, pid = server
    load_before = os.getloadavg()
    began = time.monotonic()
    cpu_before = (cpu_seconds(pid), cpu_seconds())
    rooms = [await BenchRoom.open(session, f"{base}/ws", f"{tag}-{i}", decode)
             for i in range(speakers)]
    samples: list[Sample] = []
    failures: list[str] = []
    try:
        await asyncio.sleep(1.0)  # every track flowing, VAD noise floors settled
        await get_json(session, f"{base}/bench/records?clear=1")
        await get_json(session, f"{base}/bench/state?reset=1")
        pending: list[tuple[int, BenchRoom, str]] = []
        for r in range(rounds):
            for i, room in enumerate(rooms):
                room.say(sentence(i + r))
            for room in rooms:
                room.start()
            results = await asyncio.gather(
                *(asyncio.wait_for(room.done(), ROUND_TIMEOUT) for room in rooms),
                return_exceptions=True,
            )
            await wait_idle(session, base)
            for i, (room, result) in enumerate(zip(rooms, results, strict=True)):
                if isinstance(result, BaseException):
                    failures.append(f"round {r} speaker {i}: no translation heard ({result!r})")
                    continue
                if room.news.errors:
                    failures.append(f"round {r} speaker {i}: {room.news.errors}")
                if len(room.news.utterances) > 1:
                    failures.append(f"round {r} speaker {i}: the VAD cut "
                                    f"{len(room.news.utterances)} utterances; first one kept")
                assert room.news.latency is not None
                pending.append((r, room, room.news.latency["utterance"]))
            records = {rec["id"]: rec
                       for rec in await get_json(session, f"{base}/bench/records?clear=1")}
            for r_, room, uid in pending:
                record = records.get(uid)
                if record is None or record.get("incomplete"):
                    failures.append(f"round {r_}: utterance {uid} has no complete server record")
                    continue
                samples.append(merge(speakers, r_, room, record))
            pending.clear()
            progress(f"{title}: round {r + 1}/{rounds} done, {len(samples)} utterances")
            await asyncio.sleep(0.3)
        state = await get_json(session, f"{base}/bench/state")
        took = time.monotonic() - began
        cpu = ((cpu_seconds(pid) - cpu_before[0]) / took, (cpu_seconds() - cpu_before[1]) / took)
    finally:
        for room in rooms:
            await room.close()
    return Scenario(title, speakers, rounds, samples, failures, load_before, os.getloadavg(),
                    took, state, cpu)


# ---------------------------------------------------------------- report

ROWS: list[tuple[str, str]] = [
    ("total", "TOTAL end of speech -> first translated packet at the listener"),
    ("heard", "  (heard: -> first decoded frame > -60 dBFS, aiortc client)"),
    ("", "stages on the critical path"),
    ("uplink", "  uplink: client sent last voiced frame -> server decoded it"),
    ("vad_hangover", "  VAD hangover (server stage vad_hangover_ms)"),
    ("translate", "  translate (VAD end -> translated; translate_ms)"),
    ("voiceprint", "  voiceprint (parallel; voiceprint_ms)"),
    ("voiceprint_beyond_translate", "  voiceprint beyond translation (blocks speech)"),
    ("tts", "  tts (translated -> first Kokoro chunk; tts_ms)"),
    ("playout", "  playout (first chunk -> first packet sent; playout_ms)"),
    ("downlink", "  downlink: first packet sent -> arrived at listener"),
    ("server_total", "  server total_ms (last voiced frame received -> first sent)"),
    ("", "model compute on the critical path"),
    ("translate_compute", "  translator batch call"),
    ("batch_size", "    (utterances in that batch)"),
    ("voiceprint_compute", "  voiceprint, where it outlasted translation"),
    ("kokoro_compute", "  Kokoro first chunk"),
    ("kokoro_chars", "    (characters in that chunk)"),
    ("kokoro_pieces", "    (pieces the translation was spoken in)"),
    ("model_compute", "  = model compute"),
    ("", "queueing: waiting for a model busy with other utterances"),
    ("translate_queue", "  translator"),
    ("voiceprint_queue", "  voiceprint"),
    ("kokoro_queue", "  Kokoro (speech slots + its one worker thread)"),
    ("queueing", "  = queueing"),
    ("overhead", "OVERHEAD = total - model compute - VAD hangover (300 ms)"),
    ("overhead_no_queue", "OVERHEAD without queueing"),
    ("", "  its parts (sum to it)"),
    ("uplink", "    uplink (network, server jitter buffer, decode, 16 kHz)"),
    ("vad_late", "    VAD late: measured hangover stage - configured 300 ms"),
    ("to_batcher", "    VAD end -> submitted to the micro-batcher"),
    ("batch_window", "    batching window (submitted -> dispatched, less queueing)"),
    ("translator_hops", "    translator thread hops (to and from its thread)"),
    ("to_speech", "    translated -> speech requested (captions; voiceprint hop)"),
    ("kokoro_hops", "    Kokoro hops (voice casting, plan, thread there and back)"),
    ("playout", "    playout: wait for the mixer tick"),
    ("downlink", "    downlink (outbound queue, SRTP, loopback UDP)"),
    ("parts_residual", "    (residual of the sum: rounding only)"),
]


def percentiles(values: Sequence[float]) -> tuple[float, float, float]:
    array = np.asarray(values, dtype=float)
    return (float(np.percentile(array, 50)), float(np.percentile(array, 95)),
            float(np.max(array)))


def report(scenario: Scenario) -> str:
    n = len(scenario.samples)
    load = " ".join(f"{x:.2f}" for x in scenario.load_before)
    load_after = " ".join(f"{x:.2f}" for x in scenario.load_after)
    lag = scenario.server.get("loop_lag_ms") or [0.0]
    lines = [
        f"== {scenario.title}: {scenario.speakers} simultaneous speaker(s) x "
        f"{scenario.rounds} round(s) = {n} utterance(s) measured ==",
        f"   model: {scenario.server.get('model')}; {scenario.seconds:.0f} s; load average "
        f"before {load}, after {load_after}",
        f"   server event loop lag (50 ms timer): p50 {np.percentile(lag, 50):.1f} ms, "
        f"p99 {np.percentile(lag, 99):.1f} ms, max {max(lag):.1f} ms; mixer late ticks "
        f"{scenario.server.get('late_ticks')}, skipped {scenario.server.get('skipped_ticks')}",
        f"   silence inside translations being heard (playout underrun, their next piece "
        f"late): {scenario.server.get('underrun_seconds', 0.0):.2f} s in all; Kokoro's "
        f"measured pace {scenario.server.get('kokoro_rate', math.nan):.2f} s per audio second",
        f"   CPU: server process {scenario.cpu[0]:.2f} cores, client process "
        f"{scenario.cpu[1]:.2f} cores, on average over the scenario (of {os.cpu_count()})",
    ]
    for failure in scenario.failures:
        lines.append(f"   ! {failure}")
    if not n:
        lines.append("   (no utterance measured)")
        return "\n".join(lines)
    lines.append(f"   {'figure (ms)':<66}{'p50':>8}{'p95':>8}{'max':>8}")
    for key, label in ROWS:
        if not key:
            lines.append(f"   {label}")
            continue
        values = [s.figures[key] for s in scenario.samples]
        if all(math.isnan(v) for v in values):
            continue
        p50, p95, top = percentiles(values)
        form = "{:>8.1f}" if key == "batch_size" else "{:>8.0f}"
        lines.append(f"   {label:<66}" + "".join(form.format(v) for v in (p50, p95, top)))
    return "\n".join(lines)


def summary(scenarios: Sequence[Scenario]) -> str:
    lines = ["== summary: p95 ms (p50) ==",
             f"   {'scenario':<46}{'total':>14}{'overhead':>14}{'w/o queueing':>14}"]
    for sc in scenarios:
        if not sc.samples:
            continue
        cells = []
        for key in ("total", "overhead", "overhead_no_queue"):
            p50, p95, _ = percentiles([s.figures[key] for s in sc.samples])
            cells.append(f"{p95:>7.0f} ({p50:>4.0f})")
        lines.append(f"   {sc.title[:44] + f', {sc.speakers} spk':<46}" + "".join(cells))
    ten = [sc for sc in scenarios if sc.speakers == 10 and sc.samples and "tiny" in sc.title]
    if ten:
        _, p95, _ = percentiles([s.figures["overhead"] for s in ten[0].samples])
        _, p95q, _ = percentiles([s.figures["overhead_no_queue"] for s in ten[0].samples])
        lines.append(f"   goal: overhead <= {GOAL_MS:.0f} ms p95 at 10 speakers: "
                     f"{p95:.0f} ms as the issue defines it, {p95q:.0f} ms without queueing")
    return "\n".join(lines)


# ---------------------------------------------------------------- driver


@contextlib.asynccontextmanager
async def server_process(model: str, device: str, dtype: str, log_path: Path) -> Any:
    port = free_port()
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.latency", "--serve", str(port), "--model", model,
            "--device", device, "--dtype", dtype,
            stdout=asyncio.subprocess.PIPE, stderr=log, cwd=ROOT,
        )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(1800):
            line = await process.stdout.readline()
        process.stdout.feed_eof()  # nothing else comes there
        if line.strip() != b"ready":
            raise RuntimeError(f"the {model} server did not start; see {log_path}")
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        await stop_process(process)


def rounds_for(speakers: int, utterances: int, rounds: int | None) -> int:
    return rounds if rounds else max(1, math.ceil(utterances / speakers))


async def bench(args: argparse.Namespace) -> list[Scenario]:
    PacketWatch.silence = silence_packet()
    RTCRtpReceiver._handle_rtp_packet = _watched_rtp_packet  # type: ignore[method-assign]
    offer_host_addresses(LOOPBACK)

    def progress(text: str) -> None:
        print(f"  .. {text}", file=sys.stderr, flush=True)

    plan: list[tuple[str, str, str, list[tuple[int, int]]]] = []
    if args.engine == "cascade":
        global SPEAKER_LANG, LISTENER_LANG, SPANISH_SPEECH
        SPEAKER_LANG, LISTENER_LANG, SPANISH_SPEECH = "spa", "eng", True
        cases = [(n, rounds_for(n, args.utterances, args.rounds)) for n in args.speakers]
        plan.append(("cascade", "auto", "cascade: whisper-base int8 + tiny NLLB", cases))
        if not args.skip_tiny:
            plan.append(("tiny", args.dtype or "float32", "tiny SeamlessM4T v2 (random)", cases))
        args.skip_tiny, args.real_size_utterances = True, 0
        progress("synthesizing the Spanish sentences (Kokoro, ef_dora)")
        for index in range(len(SPANISH_SENTENCES)):
            sentence(index)
    if not args.skip_tiny:
        plan.append(("tiny", args.dtype or "float32", "tiny SeamlessM4T v2 (random)",
                     [(n, rounds_for(n, args.utterances, args.rounds)) for n in args.speakers]))
    if args.real_size_utterances:
        plan.append(("real-size", args.dtype or "auto", "SeamlessM4T v2-large (random)",
                     [(1, args.real_size_utterances)]))
    scenarios: list[Scenario] = []
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    try:
        for model, dtype, title, cases in plan:
            log_path = Path(tempfile.gettempdir()) / f"babblefish-latency-{model}.log"
            progress(f"starting the {model} server (log: {log_path})")
            async with server_process(model, args.device, dtype, log_path) as server:
                progress("warm-up utterance (not counted)")
                await run_scenario(session, server, "warm-up", 1, 1, f"{model}-warm", progress)
                for speakers, rounds in cases:
                    scenario = await run_scenario(
                        session, server, title, speakers, rounds, f"{model}-{speakers}",
                        progress, args.heard,
                    )
                    scenarios.append(scenario)
                    print(report(scenario), flush=True)
                    print(flush=True)
    finally:
        await session.close()
    print(summary(scenarios), flush=True)
    return scenarios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speakers", default="1,4,10",
                        help="comma list of simultaneous speaker counts (default 1,4,10)")
    parser.add_argument("--utterances", type=int, default=20,
                        help="utterances per scenario: rounds = ceil(utterances / speakers)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per scenario instead (each speaker speaks once a round)")
    parser.add_argument("--real-size-utterances", type=int, default=10,
                        help="one-speaker utterances on the real-size random model (0: skip)")
    parser.add_argument("--skip-tiny", action="store_true",
                        help="no tiny SeamlessM4T scenarios (--engine cascade: the cascade alone)")
    parser.add_argument("--engine", choices=("seamless", "cascade"), default="seamless",
                        help="cascade: the cascade engine on real Spanish speech, then the "
                             "tiny SeamlessM4T on the same speech")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 and 2 speakers, 2 utterances each, no real size")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU host")
    parser.add_argument("--dtype", default=None,
                        help="SeamlessM4T dtype (default: float32 tiny, auto real size: bf16 "
                             "on a CPU with native bf16 or on a GPU, else fp32)")
    parser.add_argument("--heard", action="store_true",
                        help="also decode the listeners' audio and report when the translation "
                             "is first audible (costs the clients CPU the server shares)")
    parser.add_argument("--json", type=Path, default=None, help="also write every sample here")
    parser.add_argument("--loss", type=int, default=0, metavar="PACKETS",
                        help="only measure speaker -> listener lag before and after this many "
                             "lost uplink RTP packets (bench/uplink_loss.py), no engines")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="tiny", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.loss:
        from bench.uplink_loss import measure

        print(run(measure(free_port(), args.loss)), flush=True)
        return

    if args.serve is not None:
        asyncio.run(serve(args.serve, args.model, args.device, args.dtype or "auto"))
        return
    args.speakers = [int(n) for n in args.speakers.split(",") if n.strip()]
    if args.quick:
        args.speakers, args.utterances, args.rounds = [1, 2], 2, None
        args.real_size_utterances = 0
    doc = __doc__ or ""
    print(f"bench.latency on {os.cpu_count()} CPUs, device {args.device}\n"
          + doc[doc.index("Topology:"):], flush=True)
    scenarios = run(bench(args))
    if args.json is not None:
        args.json.write_text(json.dumps([
            {"title": sc.title, "speakers": sc.speakers, "failures": sc.failures,
             "samples": [dataclasses.asdict(s) for s in sc.samples]}
            for sc in scenarios
        ], indent=1))


if __name__ == "__main__":
    main()
