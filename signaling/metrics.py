"""Prometheus metrics for `GET /metrics`: stage latencies, queues, drops, rooms, loop lag."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ai.utterance import Stage, Utterance

_LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0,
)

# Voiceprint and translation both start at VAD end and run side by side, so both are
# timed from there; the critical path is vad_hangover + translate + tts + playout.
_STAGE_SPANS = (
    ("vad_hangover", Stage.LAST_VOICED, Stage.VAD_END),
    ("voiceprint", Stage.VAD_END, Stage.VOICEPRINT),
    ("translate", Stage.VAD_END, Stage.TRANSLATED),
    ("tts_first_chunk", Stage.TRANSLATED, Stage.FIRST_TTS),
    ("playout_first_packet", Stage.FIRST_TTS, Stage.FIRST_SENT),
)


class Metrics:
    """One registry per app, so tests can run several servers in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "babblefish_stage_seconds", "Latency of each pipeline stage", ["stage"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.end_to_first_packet = Histogram(
            "babblefish_speech_end_to_first_packet_seconds",
            "From the last voiced frame received to the first translated packet sent",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.utterances = Counter(
            "babblefish_utterances", "Utterances by outcome", ["outcome"], registry=r
        )
        self.dropped = Counter(
            "babblefish_dropped_utterances", "Translations dropped before playout", ["reason"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "babblefish_queue_depth", "Items waiting in each bounded queue", ["queue"], registry=r
        )
        self.rooms = Gauge("babblefish_rooms", "Open rooms", registry=r)
        self.participants = Gauge("babblefish_participants", "Connected participants", registry=r)
        self.listeners = Gauge("babblefish_listeners", "Outbound tracks being fed", registry=r)
        self.encode_streams = Gauge(
            "babblefish_encode_streams", "Distinct Opus encodes feeding those tracks", registry=r
        )
        self.colocated_groups = Gauge(
            "babblefish_colocated_groups", "Tables: groups of phones that hear one another",
            registry=r,
        )
        self.colocated_participants = Gauge(
            "babblefish_colocated_participants", "Participants seated at some table", registry=r
        )
        self.duplicates_suppressed = Counter(
            "babblefish_duplicate_utterances_suppressed",
            "Bursts of a talker's speech gated on a table-mate's microphone that heard it",
            registry=r,
        )
        self.underrun_seconds = Counter(
            "babblefish_translation_underrun_seconds",
            "Silence inside a translation being heard: its next piece was not spoken in time",
            registry=r,
        )
        self.echo_suppressed_seconds = Counter(
            "babblefish_echo_suppressed_seconds",
            "Microphone audio found to be mostly a neighbouring phone's loudspeaker",
            registry=r,
        )
        self.loop_lag = Histogram(
            "babblefish_event_loop_lag_seconds", "How late the event loop runs a timer",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0), registry=r,
        )
        self._samplers: list[Callable[[], None]] = []

    def sample_with(self, sampler: Callable[[], None]) -> None:
        """Register a callable that refreshes gauges just before each scrape."""
        self._samplers.append(sampler)

    def observe_utterance(self, utt: Utterance) -> None:
        for stage, start, end in _STAGE_SPANS:
            if start in utt.stamps and end in utt.stamps:
                self.stage_seconds.labels(stage).observe(utt.stamps[end] - utt.stamps[start])
        if Stage.LAST_VOICED in utt.stamps and Stage.FIRST_SENT in utt.stamps:
            self.end_to_first_packet.observe(
                utt.stamps[Stage.FIRST_SENT] - utt.stamps[Stage.LAST_VOICED]
            )

    async def handle(self, request: web.Request) -> web.Response:
        for sampler in self._samplers:
            sampler()
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def watch_loop_lag(self, interval: float = 0.25) -> None:
        """Runs for the app's lifetime; cancelled at shutdown."""
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                due = time.monotonic() + interval
                await asyncio.sleep(interval)
                self.loop_lag.observe(max(0.0, time.monotonic() - due))
