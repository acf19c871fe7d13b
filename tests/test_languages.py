"""The one language table against each engine's own list of languages."""

from __future__ import annotations

from collections import Counter

from faster_whisper.tokenizer import _LANGUAGE_CODES as WHISPER_CODES
from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

from ai.languages import BY_WHISPER, LANGUAGES
from ai.models import TestAssets


def test_every_flores_code_is_one_the_nllb_tokenizer_knows_and_none_is_shared() -> None:
    flores = [lang.flores for lang in LANGUAGES.values()]
    assert not set(flores) - set(FAIRSEQ_LANGUAGE_CODES)
    assert [code for code, n in Counter(flores).items() if n > 1] == []
    assert LANGUAGES["cmn"].flores == "zho_Hans" and LANGUAGES["spa"].flores == "spa_Latn"


def test_every_whisper_code_is_one_faster_whisper_knows_and_maps_back_to_one_language() -> None:
    whisper = [lang.whisper for lang in LANGUAGES.values() if lang.whisper is not None]
    assert not set(whisper) - set(WHISPER_CODES)
    assert [code for code, n in Counter(whisper).items() if n > 1] == []
    assert {BY_WHISPER[LANGUAGES[code].whisper or ""] for code in ("spa", "eng", "cmn")} == {
        "spa", "eng", "cmn",
    }


def test_whisper_languages_with_a_seamless_counterpart_all_have_one() -> None:
    """Whisper codes we leave unmapped are languages SeamlessM4T does not know at all."""
    unmapped = set(WHISPER_CODES) - set(BY_WHISPER)
    seamless_names = {lang.name for lang in LANGUAGES.values()}
    assert unmapped.isdisjoint({"es", "en", "fr", "de", "zh", "ar", "ja", "pt", "ru", "hi"})
    assert "Latin" not in seamless_names and "la" in unmapped


def test_the_real_whisper_base_tokenizer_has_a_token_for_each_mapped_language(
    test_assets: TestAssets,
) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(test_assets.whisper_base / "tokenizer.json"))
    missing = [code for code in BY_WHISPER if tokenizer.token_to_id(f"<|{code}|>") is None]
    assert missing == ["yue"]  # Cantonese came with large-v3; base and small lack it
