"""SeamlessTranslator on a tiny random SeamlessM4T v2, loaded by the production loader.

Random weights give gibberish text, so these tests check flow: how many
encoder passes run, that batch rows map back to their own language and
utterance, the detection rule, speech output, and refusals of bad input.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from ai.seamless import (
    DECODE_PREFIX,
    SeamlessM4T,
    cpu_has_native_bf16,
    pick_dtype,
    token_budget,
)
from ai.translator import (
    SeamlessTranslator,
    TranslationError,
    TranslatorBusy,
    UnknownLanguage,
)
from ai.utterance import PIPELINE_RATE
from tests.fixtures.speech import compose

RATE = PIPELINE_RATE


@pytest.fixture(scope="module")
def hello() -> np.ndarray:
    return compose([0.2, "Hello, how are you today?", 0.2], rate=RATE).audio


@pytest.fixture(scope="module")
def station() -> np.ndarray:
    return compose(["Where is the train station?", 0.3], rate=RATE).audio


@contextmanager
def encoder_calls(translator: SeamlessTranslator) -> Iterator[list[int]]:
    """The batch size of every speech-encoder pass made inside the block."""
    sizes: list[int] = []

    def count(_module: object, _args: object, kwargs: dict) -> None:
        sizes.append(kwargs["input_features"].shape[0])

    hook = translator.engine.model.speech_encoder.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield sizes
    finally:
        hook.remove()


async def test_one_encoder_pass_serves_every_target(
    seamless_translator: SeamlessTranslator, hello: np.ndarray
) -> None:
    with encoder_calls(seamless_translator) as calls:
        [result] = await seamless_translator.translate_speech(
            [(hello, "eng", ["spa", "fra", "pol"])]
        )
    assert calls == [1]
    assert result.source_lang == "eng"
    assert set(result.translations) == {"spa", "fra", "pol"}
    assert all(isinstance(text, str) and text for text in result.translations.values())
    assert result.transcript


async def test_batch_rows_map_back_to_their_utterance_and_language(
    seamless_translator: SeamlessTranslator, hello: np.ndarray, station: np.ndarray
) -> None:
    batch = [(hello, "eng", ["spa", "fra"]), (station, "eng", ["deu", "spa", "pol"])]
    with encoder_calls(seamless_translator) as calls:
        together = await seamless_translator.translate_speech(batch)
    assert calls == [2]

    seen = set()
    for (audio, source, targets), result in zip(batch, together, strict=True):
        for lang in targets:
            [alone] = await seamless_translator.translate_speech([(audio, source, [lang])])
            assert result.translations[lang] == alone.translations[lang]
            seen.add(result.translations[lang])
        assert result.transcript == alone.transcript
    # The tiny model must tell rows apart, or this test would prove nothing.
    assert len(seen) > 1


async def test_batched_decode_matches_the_models_own_generate(
    seamless_translator: SeamlessTranslator, hello: np.ndarray, station: np.ndarray
) -> None:
    """Our shared-encoder decode gives the very tokens of transformers' reference path."""
    engine = seamless_translator.engine
    results = await seamless_translator.translate_speech(
        [(hello, "eng", ["spa", "pol"]), (station, "eng", ["spa"])]
    )
    for audio, result in zip([hello, station], results, strict=False):
        for lang, text in result.translations.items():
            assert text == reference_decode(engine, audio, lang)[0]


def reference_decode(engine: SeamlessM4T, audio: np.ndarray, lang: str) -> tuple[str, float]:
    """transformers' own generate, one language at a time: text and mean token log-prob."""
    features = engine.processor(audio=[audio], sampling_rate=RATE, return_tensors="pt")
    out = engine.model.generate(
        **features, tgt_lang=lang, generate_speech=False, do_sample=False, num_beams=1,
        max_new_tokens=token_budget(len(audio)),
    )
    generated = out.sequences[:, DECODE_PREFIX:]
    logprobs = engine.model.compute_transition_scores(
        out.sequences, out.scores, normalize_logits=True
    )[0]
    eos = engine.model.generation_config.eos_token_id
    ids = generated[0].tolist()
    kept = ids.index(eos) + 1 if eos in ids else len(ids)
    text = engine.tokenizer.decode(generated[0], skip_special_tokens=True).strip()
    return text, float(logprobs[:kept].mean())


async def test_detection_picks_the_most_confident_candidate(
    seamless_translator: SeamlessTranslator, hello: np.ndarray, station: np.ndarray
) -> None:
    candidates = ["eng", "spa", "fra", "ita"]
    longer = np.concatenate([station, station])  # its rows decode on after hello's stop
    assert token_budget(len(longer)) > token_budget(len(hello))
    with encoder_calls(seamless_translator) as calls:
        result, _ = await seamless_translator.translate_speech(
            [(hello, None, ["deu"]), (longer, "eng", ["spa"])], candidates=candidates
        )
    assert calls == [2]
    tried = ["deu", *candidates, *seamless_translator.detect_candidates]
    scores = {lang: reference_decode(seamless_translator.engine, hello, lang) for lang in tried}
    best = max(tried, key=lambda lang: scores[lang][1])
    assert result.source_lang == best
    assert result.transcript == scores[best][0]
    assert set(result.translations) == {"deu"}


def test_row_confidence_is_the_mean_log_prob_of_its_own_tokens(
    seamless_translator: SeamlessTranslator, hello: np.ndarray, station: np.ndarray
) -> None:
    """Rows stop at different budgets; pads decoded after a row's end must not count."""
    engine = seamless_translator.engine
    longer = np.concatenate([station, station])
    rows = [(0, "eng"), (0, "spa"), (1, "fra")]
    texts, scores = engine.decode_speech([hello, longer], rows)
    for (index, lang), text, score in zip(rows, texts, scores, strict=True):
        expected_text, expected_score = reference_decode(engine, [hello, longer][index], lang)
        assert text == expected_text
        assert score == pytest.approx(expected_score, abs=1e-4)


async def test_detection_result_drives_a_mixed_batch(
    seamless_translator: SeamlessTranslator, hello: np.ndarray, station: np.ndarray
) -> None:
    declared, detected = await seamless_translator.translate_speech(
        [(hello, "eng", ["spa"]), (station, None, ["spa"])]
    )
    assert declared.source_lang == "eng"
    assert detected.source_lang in {"spa", *seamless_translator.detect_candidates}
    [again] = await seamless_translator.translate_speech([(station, detected.source_lang, ["spa"])])
    assert detected.transcript == again.transcript


async def test_text_translation_is_batched_and_row_faithful(
    seamless_translator: SeamlessTranslator,
) -> None:
    texts = ["Good morning, how are you?", "Where is the train station?", "Thank you."]
    together = await seamless_translator.translate_text(texts, "eng", "spa")
    assert len(together) == 3
    for text, translated in zip(texts, together, strict=True):
        assert [translated] == await seamless_translator.translate_text([text], "eng", "spa")


async def test_speech_output_for_a_language_kokoro_lacks(
    seamless_translator: SeamlessTranslator,
) -> None:
    audio, rate = await seamless_translator.speak("Dzień dobry, jak się masz?", "pol")
    assert rate == 16_000
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) > 0.1 * rate
    assert np.all(np.isfinite(audio)) and np.max(np.abs(audio)) > 0


def test_capabilities_come_from_the_loaded_model(seamless_translator: SeamlessTranslator) -> None:
    assert {"eng", "spa", "pol", "afr"} <= seamless_translator.text_languages
    assert "pol" in seamless_translator.speech_languages
    assert "afr" not in seamless_translator.speech_languages
    assert "ast" not in seamless_translator.text_languages


SPEECH_REFUSALS = [
    ("empty", np.zeros(0, np.float32), "eng", ["spa"], TranslationError, "empty"),
    ("too short", np.zeros(int(0.1 * RATE), np.float32), "eng", ["spa"], TranslationError,
     "too short"),
    ("too long", np.zeros(31 * RATE, np.float32), "eng", ["spa"], TranslationError, "too long"),
    ("nan", np.full(RATE, np.nan, np.float32), "eng", ["spa"], TranslationError, "NaN"),
    ("stereo", np.zeros((2, RATE), np.float32), "eng", ["spa"], TranslationError, "mono"),
    ("int samples", np.zeros(RATE, np.int16), "eng", ["spa"], TranslationError, "float"),
    ("unknown source", np.zeros(RATE, np.float32), "xx", ["spa"], UnknownLanguage, "unknown"),
    ("unknown target", np.zeros(RATE, np.float32), "eng", ["klingon"], UnknownLanguage,
     "unknown"),
    ("unwritable target", np.zeros(RATE, np.float32), "eng", ["ast"], UnknownLanguage,
     "cannot be written"),
]


@pytest.mark.parametrize(
    ("audio", "source", "targets", "error", "words"),
    [case[1:] for case in SPEECH_REFUSALS],
    ids=[case[0] for case in SPEECH_REFUSALS],
)
async def test_bad_speech_input_is_refused_before_the_model(
    seamless_translator: SeamlessTranslator,
    audio: np.ndarray, source: str, targets: list[str], error: type[Exception], words: str,
) -> None:
    with encoder_calls(seamless_translator) as calls, pytest.raises(error, match=words):
        await seamless_translator.translate_speech([(audio, source, targets)])
    assert calls == []


@pytest.mark.parametrize(
    ("texts", "source", "target", "words"),
    [
        ([""], "eng", "spa", "empty"),
        (["   "], "eng", "spa", "empty"),
        ([], "eng", "spa", "non-empty list"),
        ("a bare string", "eng", "spa", "non-empty list"),
        (["x" * 2001], "eng", "spa", "too long"),
        (["hello"], "eng", "zzz", "unknown"),
        (["hello"], "qqq", "spa", "unknown"),
    ],
)
async def test_bad_text_input_is_refused(
    seamless_translator: SeamlessTranslator, texts: list[str], source: str, target: str, words: str
) -> None:
    with pytest.raises(TranslationError, match=words):
        await seamless_translator.translate_text(texts, source, target)


async def test_speech_output_refuses_languages_the_vocoder_lacks(
    seamless_translator: SeamlessTranslator,
) -> None:
    with pytest.raises(UnknownLanguage, match="cannot be spoken"):
        await seamless_translator.speak("Goeie more", "afr")
    with pytest.raises(UnknownLanguage, match="unknown"):
        await seamless_translator.speak("hello", "nope")
    with pytest.raises(TranslationError, match="empty"):
        await seamless_translator.speak("", "pol")


async def test_calls_past_the_waiting_bound_are_refused_at_once(
    seamless_translator: SeamlessTranslator, hello: np.ndarray
) -> None:
    narrow = SeamlessTranslator(seamless_translator.engine, max_waiting=1)
    try:
        first, second = await asyncio.gather(
            narrow.translate_speech([(hello, "eng", ["spa"])]),
            narrow.translate_speech([(hello, "eng", ["spa"])]),
            return_exceptions=True,
        )
    finally:
        narrow.close()
    assert isinstance(first, list) and first[0].translations["spa"]
    assert isinstance(second, TranslatorBusy)


def test_dtype_choice(tmp_path: Path) -> None:
    native = cpu_has_native_bf16()
    assert pick_dtype(torch.device("cpu")) == (torch.bfloat16 if native else torch.float32)
    assert pick_dtype(torch.device("cpu"), "float32") == torch.float32
    assert pick_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    amx = tmp_path / "cpuinfo-amx"
    amx.write_text("flags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    old = tmp_path / "cpuinfo-old"
    old.write_text("flags\t\t: fpu sse avx2\n")
    assert cpu_has_native_bf16(amx) and not cpu_has_native_bf16(old)
    assert not cpu_has_native_bf16(tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown dtype"):
        pick_dtype(torch.device("cpu"), "float7")


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
async def test_faster_cpu_modes_run_end_to_end(
    tiny_seamless_dir: Path, hello: np.ndarray, dtype: str
) -> None:
    translator = SeamlessTranslator.load(tiny_seamless_dir, dtype=dtype)
    try:
        model = translator.engine.model
        if dtype == "int8":
            for layer in (model.text_decoder.layers[0].self_attn.q_proj, model.lm_head):
                assert isinstance(layer, torch.ao.nn.quantized.dynamic.Linear)
        else:
            assert translator.engine.dtype == torch.bfloat16
        [result] = await translator.translate_speech([(hello, "eng", ["spa", "pol"])])
        assert result.translations["spa"] and result.transcript
        assert (await translator.translate_text(["Good morning"], "eng", "fra"))[0]
        audio, _ = await translator.speak("Dzień dobry", "pol")
        assert len(audio) > 0 and np.all(np.isfinite(audio))
    finally:
        translator.close()


def test_int8_is_a_cpu_mode(tiny_seamless_dir: Path) -> None:
    with pytest.raises(ValueError, match="CPU mode"):
        SeamlessM4T.load(tiny_seamless_dir, device="meta", dtype="int8")


def test_detection_candidates_come_from_what_the_loaded_model_has() -> None:
    from types import SimpleNamespace

    from ai.translator import DETECT_CANDIDATES, SeamlessTranslator

    without_cmn = SimpleNamespace(text_languages=frozenset({"eng", "spa", "fra", "zul"}))
    translator = SeamlessTranslator(without_cmn)  # type: ignore[arg-type]
    try:
        assert "cmn" in DETECT_CANDIDATES
        assert translator.detect_candidates == ("eng", "spa", "fra")
    finally:
        translator.close()
    none_listed = SimpleNamespace(text_languages=frozenset({"zul", "yor"}))
    translator = SeamlessTranslator(none_listed)  # type: ignore[arg-type]
    try:
        assert translator.detect_candidates == ("yor", "zul")
    finally:
        translator.close()
