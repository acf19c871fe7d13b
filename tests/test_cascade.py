"""CascadeTranslator: real whisper-base hears Kokoro's Spanish; a tiny random NLLB translates.

Whisper's words are checked (real weights). The tiny NLLB's output is gibberish, so
for it only the mechanics are checked: one call per batch, a string per target.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from ai.cascade import FRAMES_PER_SECOND, PRIOR_WEIGHT, WINDOW_MARGIN_S, Cascade
from ai.translator import CascadeTranslator, TranslationError, UnknownLanguage
from ai.utterance import PIPELINE_RATE, Audio
from tests.fixtures.cascade import ENGLISH_CONTENT, content_words
from tests.fixtures.kokoro import words


@contextmanager
def counting(obj: Any, name: str, threads: list[str] | None = None) -> Iterator[list[Any]]:
    """Records the first argument of each call to `obj.name`, which still runs,
    and in `threads` the thread each call ran on."""
    calls: list[Any] = []
    original = getattr(obj, name)

    def wrapper(first: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(first)
        if threads is not None:
            threads.append(threading.current_thread().name)
        return original(first, *args, **kwargs)

    setattr(obj, name, wrapper)
    try:
        yield calls
    finally:
        setattr(obj, name, original)


async def test_spanish_speech_is_heard_as_spanish_and_written_in_english_and_french(
    cascade_translator: CascadeTranslator, spanish_speech: list[Audio]
) -> None:
    engine = cascade_translator.engine
    threads: list[str] = []
    with counting(engine.ears, "encode", threads) as encodes, \
            counting(engine.translator, "translate", threads) as translations:
        results = await cascade_translator.translate_speech(
            [(audio, None, ["eng", "fra", "deu"]) for audio in spanish_speech],
            priors=["eng", "eng"],  # a speaker who declared English, but speaks Spanish
        )

    assert len(encodes) == 1 and len(encodes[0]) == 2  # one encoder pass for both
    assert all(name.startswith("cascade") for name in threads)  # the model thread, not the loop
    assert len(translations) == 1  # both utterances, both text targets: one translate_batch
    assert sorted((row[1], row[2]) for row in translations[0]) == [
        ("spa", "deu"), ("spa", "deu"), ("spa", "fra"), ("spa", "fra"),
    ]
    for result, content in zip(results, ENGLISH_CONTENT, strict=True):
        assert result.source_lang == "spa"
        assert {"tren", "estacion", "proyecto"} & set(words(result.transcript))
        english = content_words(result.translations["eng"])
        assert len(content & english) >= len(content) - 1, result.translations["eng"]
        # Tiny random NLLB: mechanics only, its words mean nothing.
        assert isinstance(result.translations["fra"], str) and result.translations["fra"]
        assert set(result.translations) == {"eng", "fra", "deu"}


def test_the_encoder_window_fits_the_longest_utterance_not_30_seconds(
    cascade_translator: CascadeTranslator, spanish_speech: list[Audio]
) -> None:
    clip = spanish_speech[0]
    seconds = math.ceil(len(clip) / PIPELINE_RATE + WINDOW_MARGIN_S)

    encoded = cascade_translator.engine.ears.encode([clip, clip[:PIPELINE_RATE]])

    # The encoder halves the mel frames; 30 s would give 1500 rows.
    assert encoded.shape[:2] == (2, seconds * FRAMES_PER_SECOND // 2)
    assert seconds < 10


async def test_a_pinned_language_skips_detection_and_its_own_target_is_the_transcript(
    cascade_translator: CascadeTranslator, spanish_speech: list[Audio]
) -> None:
    engine = cascade_translator.engine
    with counting(engine.ears, "language_odds") as detections:
        [result] = await cascade_translator.translate_speech(
            [(spanish_speech[1], "spa", ["spa", "eng"])]
        )
    assert detections == []
    assert result.source_lang == "spa"
    assert result.translations["spa"] == result.transcript
    assert {"train", "station"} <= content_words(result.translations["eng"])


async def test_english_from_the_text_translator_when_asked(
    cascade_translator: CascadeTranslator, spanish_speech: list[Audio]
) -> None:
    engine = cascade_translator.engine
    by_mt = Cascade(engine.ears, engine.translator, english_by="mt")
    with counting(engine.translator, "translate") as translations:
        [result] = by_mt.translate_speech(
            [cascade_translator_job(spanish_speech[0], ("eng",))]
        )
    assert [(row[1], row[2]) for row in translations[0]] == [("spa", "eng")]
    assert result.translations["eng"] and "morning" not in result.translations["eng"]


async def test_text_later_leaves_the_text_models_targets_to_translate_text(
    cascade_translator: CascadeTranslator, spanish_speech: list[Audio]
) -> None:
    engine = cascade_translator.engine
    with counting(engine.translator, "translate") as translations:
        [result] = await cascade_translator.translate_speech(
            [(spanish_speech[1], "spa", ["spa", "eng", "fra"])], text_later=True
        )
    assert translations == []  # Whisper alone ran
    assert set(result.translations) == {"spa", "eng"}
    assert {"train", "station"} <= content_words(result.translations["eng"])
    [french] = await cascade_translator.translate_text([result.transcript], "spa", "fra")
    assert french  # the tiny NLLB: words not checked


def cascade_translator_job(audio: Audio, targets: Sequence[str]) -> Any:
    from ai.cascade import CascadeJob

    return CascadeJob(audio, None, tuple(targets), "spa")


@pytest.mark.parametrize(
    ("odds", "prior", "heard"),
    [
        ({"spa": 0.5, "por": 0.3}, "por", "por"),  # within PRIOR_WEIGHT: the declared one
        ({"eng": 0.4, "spa": 0.1}, "spa", "spa"),  # 4x: still under the weight
        ({"eng": 0.97, "spa": 0.01}, "spa", "eng"),  # a clear switch of language
        ({"eng": 0.2, "spa": 0.7}, None, "spa"),  # nothing declared: the likeliest
    ],
)
def test_the_declared_language_wins_unless_another_is_far_likelier(
    cascade_translator: CascadeTranslator, odds: dict[str, float], prior: str | None, heard: str
) -> None:
    assert PRIOR_WEIGHT == 5.0  # the cases above sit either side of it
    assert cascade_translator.engine.detect(odds, prior) == heard


@pytest.mark.parametrize(
    ("item", "error", "says"),
    [
        ((np.zeros(800, np.float32), None, ["eng"]), TranslationError, "too short"),
        ((np.zeros(16000, np.float32), None, ["xxx"]), UnknownLanguage, "unknown language"),
        ((np.zeros(16000, np.float32), "ast", ["eng"]), UnknownLanguage, "heard by Whisper"),
        ((np.zeros(16000, np.float32), None, ["ast"]), UnknownLanguage, "written"),
    ],
)
async def test_bad_input_is_refused_before_the_models_see_it(
    cascade_translator: CascadeTranslator, item: Any, error: type[Exception], says: str
) -> None:
    with counting(cascade_translator.engine.ears, "encode") as encodes:
        with pytest.raises(error, match=says):
            await cascade_translator.translate_speech([item])
    assert encodes == []


async def test_text_translation_and_the_languages_it_reports(
    cascade_translator: CascadeTranslator,
) -> None:
    [text] = await cascade_translator.translate_text(["Buenos días."], "spa", "fra")
    assert isinstance(text, str)
    assert {"spa", "eng", "fra", "cmn"} <= cascade_translator.heard_languages
    assert "yue" not in cascade_translator.heard_languages  # whisper-base has no Cantonese
    assert {"spa", "eng", "fra", "zlm"} <= cascade_translator.text_languages
    assert cascade_translator.speech_languages == frozenset()
    with pytest.raises(UnknownLanguage, match="no voice"):
        await cascade_translator.speak("Hola.", "spa")
