"""The async `Translator`s every room shares: input checks, one model thread.

`SeamlessTranslator` wraps one loaded `SeamlessM4T`; `CascadeTranslator` one
loaded `Cascade` (Whisper and an NLLB text model). Their async methods check
their input first (a `TranslationError` names what is wrong and the model never
sees it), then run the blocking model call on one dedicated thread, so model
calls never overlap and the event loop never waits on them. Callers batch
through `ai.batcher.MicroBatcher` around `translate_speech`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from ai.engines import SpeechResult
from ai.languages import LANGUAGES
from ai.models import SEAMLESS
from ai.utterance import PIPELINE_RATE, Audio

if TYPE_CHECKING:
    from ai.cascade import Cascade, EnglishBy
    from ai.seamless import SeamlessM4T, SpeechJob

T = TypeVar("T")

MIN_SECONDS = 0.25
"""Shorter clips carry no word; the speech encoder needs a few frames anyway."""

MAX_SECONDS = 30.0
"""Utterances are cut by the VAD well before this; longer input is a caller bug."""

MAX_TEXT_CHARS = 2000

HEARD = frozenset(code for code, lang in LANGUAGES.items() if lang.speech_in)

DETECT_CANDIDATES = ("eng", "spa", "fra", "deu", "cmn", "hin", "arb", "por", "rus", "jpn")
"""Tried, with the requested targets, when a speaker declared no language; those the
loaded model lacks are left out."""


class TranslationError(ValueError):
    """Input the translator refuses; the message says what and why."""

    code = "invalid_input"


class UnknownLanguage(TranslationError):
    code = "unknown_language"


class TranslatorBusy(RuntimeError):
    """Too many calls already wait for the model; this one was not queued."""


def check_audio(audio: Audio, max_seconds: float = MAX_SECONDS) -> Audio:
    """16 kHz mono float32, finite, of a length the model can use."""
    samples = np.asarray(audio)
    if samples.ndim != 1:
        raise TranslationError(f"audio must be mono (one dimension), got shape {samples.shape}")
    if not np.issubdtype(samples.dtype, np.floating):
        raise TranslationError(f"audio must be float samples in [-1, 1], got {samples.dtype}")
    if samples.size == 0:
        raise TranslationError("audio is empty")
    if not np.all(np.isfinite(samples)):
        raise TranslationError("audio holds NaN or infinite samples")
    seconds = samples.size / PIPELINE_RATE
    if seconds < MIN_SECONDS:
        raise TranslationError(f"audio too short: {seconds:.2f} s, need at least {MIN_SECONDS} s")
    if seconds > max_seconds:
        raise TranslationError(f"audio too long: {seconds:.1f} s, at most {max_seconds:g} s")
    return samples.astype(np.float32, copy=False)


def check_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise TranslationError("text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise TranslationError(f"text too long: {len(text)} characters, at most {MAX_TEXT_CHARS}")
    return text.strip()


def _check_language(code: object, allowed: frozenset[str], ability: str) -> str:
    if not isinstance(code, str) or code not in LANGUAGES:
        raise UnknownLanguage(f"unknown language {code!r}; use a code from /languages")
    if code not in allowed:
        raise UnknownLanguage(f"{LANGUAGES[code].name} ({code}) cannot be {ability}")
    return code


def _targets(targets: Sequence[str], written: frozenset[str]) -> tuple[str, ...]:
    """Each target once, in order; raises `UnknownLanguage` for one that cannot be written."""
    return tuple(dict.fromkeys(_check_language(t, written, "written") for t in targets))


def _text_job(
    texts: Sequence[str], source_lang: str, target_lang: str, languages: frozenset[str],
    by: str = "",
) -> tuple[list[str], str, str]:
    """Checked texts, source and target for a text translation, or a `TranslationError`."""
    if isinstance(texts, str) or not texts:
        raise TranslationError("texts must be a non-empty list of strings")
    return (
        [check_text(text) for text in texts],
        _check_language(source_lang, languages, f"read{by}"),
        _check_language(target_lang, languages, f"written{by}"),
    )


def _priors(batch: Sequence[object], priors: Sequence[str | None]) -> list[str | None]:
    """One prior per item; an unknown one is dropped (it only ever biases detection)."""
    if priors and len(priors) != len(batch):
        raise TranslationError(f"{len(priors)} priors for {len(batch)} items")
    return [p if p in LANGUAGES else None for p in priors] if priors else [None] * len(batch)


class ModelThread:
    """One thread for a model's blocking calls, with a bound on the calls waiting for it.

    Queue bound: at most `max_waiting` calls wait; one more raises
    `TranslatorBusy` at once rather than queueing without end, so an overloaded
    server says so instead of answering minutes late.
    """

    def __init__(self, name: str, max_waiting: int = 32) -> None:
        self._max_waiting = max_waiting
        self._waiting = 0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, call: Callable[..., T], *args: object) -> T:
        if self._waiting >= self._max_waiting:
            raise TranslatorBusy(f"{self._max_waiting} translator calls already waiting")
        self._waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)
        finally:
            self._waiting -= 1

    def close(self, wait: bool = True) -> None:
        """Drops calls not yet started; with `wait`, blocks until the running one ended."""
        self._thread.shutdown(wait=wait, cancel_futures=True)


class SeamlessTranslator:
    """SeamlessM4T v2 as a `Translator`, one copy shared by every caller.

    Queue bound: that of its `ModelThread`.
    """

    def __init__(
        self,
        engine: SeamlessM4T,
        *,
        detect_candidates: Sequence[str] = DETECT_CANDIDATES,
        max_seconds: float = MAX_SECONDS,
        max_waiting: int = 32,
    ) -> None:
        self.engine = engine
        # Only what the loaded model has: a smaller or fine-tuned checkpoint may lack some.
        self.detect_candidates = tuple(c for c in detect_candidates if c in engine.text_languages)
        if not self.detect_candidates:
            self.detect_candidates = tuple(sorted(engine.text_languages))[: len(DETECT_CANDIDATES)]
        self.max_seconds = max_seconds
        self._thread = ModelThread("seamless", max_waiting)

    @classmethod
    def load(
        cls,
        source: str | Path = SEAMLESS.source,
        *,
        device: str = "auto",
        dtype: str = "auto",
        threads: int | None = None,
        detect_candidates: Sequence[str] = DETECT_CANDIDATES,
        max_seconds: float = MAX_SECONDS,
    ) -> SeamlessTranslator:
        """Blocking (seconds to minutes): call it off the event loop, once per process."""
        from ai.seamless import SeamlessM4T

        engine = SeamlessM4T.load(source, device=device, dtype=dtype, threads=threads)
        return cls(engine, detect_candidates=detect_candidates, max_seconds=max_seconds)

    @property
    def text_languages(self) -> frozenset[str]:
        return self.engine.text_languages

    @property
    def speech_languages(self) -> frozenset[str]:
        return self.engine.speech_languages

    def job(
        self, audio: Audio, source_lang: str | None, targets: Sequence[str],
        candidates: Sequence[str] = (), prior: str | None = None,
    ) -> SpeechJob:
        """A checked job; raises `TranslationError` for anything the model should not see."""
        from ai.seamless import SpeechJob

        samples = check_audio(audio, self.max_seconds)
        if source_lang is not None:
            _check_language(source_lang, HEARD, "heard")
        wanted = _targets(targets, self.text_languages)
        tried: tuple[str, ...] = ()
        if source_lang is None:
            extra = [_check_language(c, self.text_languages, "detected") for c in candidates]
            if prior in self.text_languages:
                # A room's listening languages and the speaker's own are the likely ones;
                # each more candidate is one more decoder row on the critical path.
                tried = tuple(dict.fromkeys([*wanted, prior, *extra]))
            else:
                tried = tuple(dict.fromkeys([*wanted, *extra, *self.detect_candidates]))
        return SpeechJob(samples, source_lang, wanted, tried, prior)

    async def translate_speech(
        self,
        batch: Sequence[tuple[Audio, str | None, Sequence[str]]],
        candidates: Sequence[str] = (),
        *,
        priors: Sequence[str | None] = (),
        text_later: bool = False,
    ) -> list[SpeechResult]:
        """One encoder pass over the batch, one decode over every (item, language);
        every target comes from the speech, so `text_later` changes nothing.

        `candidates` are tried, with each item's targets, its prior and
        `detect_candidates`, for items whose source language is None.
        """
        jobs = [
            self.job(audio, source, targets, candidates, prior)
            for (audio, source, targets), prior in zip(batch, _priors(batch, priors), strict=True)
        ]
        if not jobs:
            return []
        return await self._thread.run(self.engine.translate_speech, jobs)

    async def translate_text(
        self, texts: Sequence[str], source_lang: str, target_lang: str
    ) -> list[str]:
        job = _text_job(texts, source_lang, target_lang, self.text_languages)
        return await self._thread.run(self.engine.translate_text, *job)

    async def speak(self, text: str, lang: str) -> tuple[Audio, int]:
        checked = check_text(text)
        voice = _check_language(lang, self.speech_languages, "spoken by SeamlessM4T")
        return await self._thread.run(self.engine.speak, checked, voice)

    def close(self, wait: bool = True) -> None:
        self._thread.close(wait)


class CascadeTranslator:
    """Whisper and a CTranslate2 NLLB/M2M100 as a `Translator`, one copy shared by every caller.

    It has no voice of its own: `speech_languages` is empty, and languages that
    Kokoro does not speak get captions only. Queue bound: that of its `ModelThread`.
    """

    def __init__(
        self, engine: Cascade, *, max_seconds: float = MAX_SECONDS, max_waiting: int = 32
    ) -> None:
        self.engine = engine
        self.max_seconds = max_seconds
        self._thread = ModelThread("cascade", max_waiting)

    @classmethod
    def load(
        cls,
        whisper: str | Path,
        translator: str | Path,
        *,
        device: str = "auto",
        compute_type: str = "auto",
        threads: int | None = None,
        english_by: EnglishBy = "whisper",
        max_seconds: float = MAX_SECONDS,
    ) -> CascadeTranslator:
        """Blocking (seconds): call it off the event loop, once per process."""
        from ai.cascade import Cascade

        engine = Cascade.load(
            whisper, translator, device=device, compute_type=compute_type,
            threads=threads or 0, english_by=english_by,
        )
        return cls(engine, max_seconds=max_seconds)

    @property
    def heard_languages(self) -> frozenset[str]:
        return self.engine.heard_languages

    @property
    def text_languages(self) -> frozenset[str]:
        return self.engine.text_languages

    @property
    def speech_languages(self) -> frozenset[str]:
        return frozenset()

    async def translate_speech(
        self,
        batch: Sequence[tuple[Audio, str | None, Sequence[str]]],
        *,
        priors: Sequence[str | None] = (),
        text_later: bool = False,
    ) -> list[SpeechResult]:
        """One Whisper encoder pass and decode over the batch, one text translation
        over every (item, target) pair (none with `text_later`: those targets are left
        out); a source of None is detected, favouring its prior."""
        from ai.cascade import CascadeJob

        jobs = []
        for (audio, source, targets), prior in zip(batch, _priors(batch, priors), strict=True):
            samples = check_audio(audio, self.max_seconds)
            if source is not None:
                _check_language(source, self.heard_languages, "heard by Whisper")
            wanted = _targets(targets, self.text_languages)
            jobs.append(CascadeJob(samples, source, wanted, prior))
        if not jobs:
            return []
        return await self._thread.run(self.engine.translate_speech, jobs, text_later)

    async def translate_text(
        self, texts: Sequence[str], source_lang: str, target_lang: str
    ) -> list[str]:
        job = _text_job(texts, source_lang, target_lang, self.engine.readable_languages,
                        " by the text translator")
        return await self._thread.run(self.engine.translate_text, *job)

    async def speak(self, text: str, lang: str) -> tuple[Audio, int]:
        raise UnknownLanguage("the cascade engine has no voice of its own; Kokoro speaks")

    def close(self, wait: bool = True) -> None:
        self._thread.close(wait)
