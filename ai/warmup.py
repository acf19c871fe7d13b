"""Run every engine once at start-up, so the first speaker does not pay for lazy set-up.

First calls are slow for reasons that have nothing to do with the input:
ONNX Runtime and torch pick kernels, misaki loads its dictionaries, and
pages of weights are read from disk. A throwaway pass moves that cost to
start-up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import numpy as np

from ai.engines import SpeakerEmbedder, SpeechSynthesizer, Translator
from ai.kokoro_voices import KOKORO_LANGUAGES
from ai.utterance import PIPELINE_RATE


def _quiet_noise(seconds: float) -> np.ndarray:
    """Near-silence; exact zeros would feed log(0) into filterbank front ends."""
    rng = np.random.default_rng(0)
    return (rng.standard_normal(round(seconds * PIPELINE_RATE)) * 1e-3).astype(np.float32)


GREETINGS = {"spa": "Hola.", "fra": "Bonjour.", "ita": "Ciao.", "por": "Olá.",
             "hin": "नमस्ते।", "jpn": "こんにちは。", "cmn": "你好。"}
"""Something each G2P can phonemize; English for the rest."""


def default_warmup_voices(tts: SpeechSynthesizer) -> dict[str, str]:
    """One voice per language the synthesizer speaks, so every G2P path gets loaded."""
    return {
        lang: (table.female + table.male)[0]
        for lang, table in KOKORO_LANGUAGES.items()
        if tts.speaks(lang) and table.female + table.male
    }


async def warm_up(
    *,
    embedder: SpeakerEmbedder | None = None,
    translator: Translator | None = None,
    tts: SpeechSynthesizer | None = None,
    tts_voices: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """Seconds each engine's first pass took, by engine name, for the start-up log."""
    took: dict[str, float] = {}
    audio = _quiet_noise(1.0)
    if embedder is not None:
        began = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(None, embedder.embed, audio)
        took["voiceprint"] = time.monotonic() - began
    if translator is not None:
        began = time.monotonic()
        await translator.translate_speech([(audio, "eng", ["spa"])])
        await translator.translate_text(["Hello."], "eng", "spa")
        took["translator"] = time.monotonic() - began
    if tts is not None:
        voices = default_warmup_voices(tts) if tts_voices is None else tts_voices
        for lang, voice in voices.items():
            began = time.monotonic()
            async for _ in tts.stream(GREETINGS.get(lang, "Hello."), lang, voice):
                pass
            took[f"tts:{lang}"] = time.monotonic() - began
    return took
