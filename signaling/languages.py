"""What `/languages` reports: each language and what the server can do with it.

The default source reads the static tables; engines that learn more at run time (e.g.
which voices actually loaded) pass their own `LanguageSource` to `create_app`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ai.kokoro_voices import KOKORO_LANGUAGES
from ai.languages import LANGUAGES

SpeechOut = Literal["kokoro", "seamless"] | None


@dataclass(frozen=True, slots=True)
class LanguageInfo:
    code: str
    name: str
    speech_in: bool
    text_out: bool
    speech_out: SpeechOut
    """Who speaks translations into it: Kokoro, SeamlessM4T's vocoder, or nobody (captions)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


LanguageSource = Callable[[], Sequence[LanguageInfo]]


def table_languages() -> list[LanguageInfo]:
    """Every language in `ai.languages`, speech output as the static tables promise it."""
    found = []
    for code, language in LANGUAGES.items():
        speech_out: SpeechOut = None
        if code in KOKORO_LANGUAGES:
            speech_out = "kokoro"
        elif language.seamless_speech_out:
            speech_out = "seamless"
        found.append(
            LanguageInfo(code, language.name, language.speech_in, language.text_out, speech_out)
        )
    return sorted(found, key=lambda info: info.name)


def untranslated_languages() -> list[LanguageInfo]:
    """For a server without engines (`--no-translation`): every language can be listened
    in (same-language voices), none is recognized, translated into or spoken."""
    return [
        LanguageInfo(info.code, info.name, speech_in=False, text_out=True, speech_out=None)
        for info in table_languages()
    ]
