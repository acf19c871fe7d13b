"""Mounts the engines on the web app: REST face, live translation in rooms, /metrics."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from ai.engines import Engines
from ai.identify import Embed
from ai.models import ResolvedModels
from ai.pipeline import PipelineEngines
from ai.rest import add_rest_routes
from ai.translator import HEARD, CascadeTranslator, SeamlessTranslator
from ai.tts import KokoroSettings, KokoroTTS
from ai.voiceprint import PyannoteEmbedder
from ai.warmup import warm_up
from signaling.languages import LanguageInfo
from signaling.live import LiveTranslation
from signaling.metrics import Metrics
from signaling.web import SETTINGS, SIGNALING

log = logging.getLogger(__name__)


class _ModelThreads(Protocol):
    def close(self, wait: bool = True) -> None: ...


@dataclass
class LoadedEngines:
    translator: SeamlessTranslator | CascadeTranslator
    tts: KokoroTTS
    embedder: PyannoteEmbedder | None


def load_engines(
    models: ResolvedModels, threads: int = 0, *, engine: str = "seamless",
    english_from: str = "whisper",
) -> LoadedEngines:
    """Blocking: one copy of each model for the whole process."""
    translator: SeamlessTranslator | CascadeTranslator
    if engine == "cascade":
        if models.asr is None or models.mt is None:
            raise ValueError("the cascade engine needs its ASR and MT models resolved")
        translator = CascadeTranslator.load(
            models.asr, models.mt, threads=threads or None,
            english_by="mt" if english_from == "mt" else "whisper",
        )
    else:
        if models.seamless is None:
            raise ValueError("the seamless engine needs its model resolved")
        translator = SeamlessTranslator.load(models.seamless, threads=threads or None)
    tts = KokoroTTS(
        KokoroSettings(
            models.kokoro_model, models.kokoro_voices, threads=threads,
            ja_dictionary=models.ja_dictionary,
        )
    )
    return LoadedEngines(translator, tts, PyannoteEmbedder(models.speaker))


def heard_languages(translator: SeamlessTranslator | CascadeTranslator) -> frozenset[str]:
    if isinstance(translator, CascadeTranslator):
        return translator.heard_languages
    return HEARD


def mount_translation(
    app: web.Application, loaded: LoadedEngines, *, owns_engines: bool = True, warm: bool = True
) -> LiveTranslation:
    """REST routes, live rooms, `/languages` capabilities and `/metrics` on a `create_app` app.

    With `owns_engines` the models are closed with the app; tests that share engines
    between servers pass False. `warm` runs each engine once before serving.
    """
    engines = Engines(
        loaded.translator, loaded.tts,
        written=loaded.translator.text_languages,
        heard=heard_languages(loaded.translator),
        seamless_spoken=loaded.translator.speech_languages,
    )
    pipeline = PipelineEngines(
        loaded.translator, loaded.tts, seamless_spoken=loaded.translator.speech_languages
    )
    add_rest_routes(app, engines, pipeline, max_upload_bytes=app[SETTINGS].max_upload_bytes)
    app[SIGNALING].languages = lambda: [LanguageInfo(**info) for info in engines.languages()]
    embed = loaded.embedder.embed_async if loaded.embedder is not None else None

    async def start(app: web.Application) -> None:
        if warm:
            took = await warm_up(
                embedder=loaded.embedder, translator=loaded.translator, tts=loaded.tts
            )
            log.info("engines warmed up: %s", {k: round(v, 2) for k, v in took.items()})

    engines_of_app: list[_ModelThreads] = (
        [e for e in (loaded.translator, loaded.tts, loaded.embedder) if e is not None]
        if owns_engines
        else []
    )

    async def drop_queued(app: web.Application) -> None:
        # At shutdown, before aiohttp waits for open requests: queued model calls end now,
        # so requests and rooms waiting on them finish instead of running out the clock.
        for engine in engines_of_app:
            engine.close(wait=False)

    async def stop(app: web.Application) -> None:
        # Off the loop, wait for each model's running call: a thread still inside ONNX
        # Runtime or torch when the interpreter exits aborts the process (exit 134).
        for engine in engines_of_app:
            await asyncio.to_thread(engine.close)

    app.on_startup.append(start)
    app.on_shutdown.append(drop_queued)
    app.on_cleanup.append(stop)
    return mount_live(app, pipeline, embed)


def mount_live(
    app: web.Application, pipeline: PipelineEngines, embed: Embed | None
) -> LiveTranslation:
    """Live translation in the app's rooms through `pipeline`, and `/metrics`.

    `embed` gives voiceprints; None names each speaker after their connection.
    """
    signaling = app[SIGNALING]
    metrics = Metrics()
    live = LiveTranslation(pipeline, embed=embed, metrics=metrics)
    live.register_messages(signaling.messages)
    signaling.rooms.add_observer(live)
    metrics.sample_with(lambda: _sample_rooms(app, metrics))
    app.router.add_get("/metrics", metrics.handle)
    lag: list[asyncio.Task[None]] = []

    async def start(app: web.Application) -> None:
        lag.append(asyncio.create_task(metrics.watch_loop_lag()))

    async def stop(app: web.Application) -> None:
        for task in lag:
            task.cancel()
        await live.close()
        await pipeline.close()

    app.on_startup.append(start)
    # Before the engines' own cleanup: rooms stop feeding them first.
    app.on_cleanup.insert(0, stop)
    return live


def _sample_rooms(app: web.Application, metrics: Metrics) -> None:
    rooms = app[SIGNALING].rooms
    metrics.rooms.set(len(rooms))
    metrics.participants.set(rooms.participant_count)
    listeners, streams = rooms.encoding
    metrics.listeners.set(listeners)
    metrics.encode_streams.set(streams)
