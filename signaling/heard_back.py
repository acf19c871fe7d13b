"""Translations a room played, recognised when a microphone hears one back.

The tables' echo cancellers (`media.table`) take what neighbouring loudspeakers play out
of each microphone before the VAD. What leaks past them (on the simulated table: a
loudspeaker that starts again, two that start together with different sounds) is cut
into an utterance, translated and played at the table, where it can leak again: a loop
that feeds itself, seen in tests/test_colocated.py. This is the last guard against it.
The server knows which text it had spoken to the listeners of each language and when;
an utterance heard by a microphone near those listeners, while or just after it played,
whose transcript is that text, is no one's speech, and is dropped before its captions
and speech. It needs a real transcript, so it guards real engines; it costs one
recognition of the leaked audio, never a translation played again.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from difflib import SequenceMatcher

from ai.utterance import Stage, Utterance

ECHO_DELAY = 1.5
"""Seconds from a frame leaving the server to its echo arriving back through a phone's
microphone: downlink and jitter buffer, audio output, the air, uplink and jitter buffer
(about 0.4 s in tests/test_colocated.py; the tables look for echoes up to 1 s late),
with room to spare."""

REMEMBERED = 60.0
"""Seconds after its first speech that a played translation is kept."""

SIMILAR = 0.8
"""Share of the heard words that must be words of a played text. What leaks is often a
fragment (the VAD cuts the echo at a playback's pauses), and a recogniser may repeat
part of it ("good morning to everyone good morning to everyone", from whisper-base), so
words count, not their order."""

FEWEST_WORDS = 3
"""Fewer heard words than this must match a played text as a whole, or, two words, stand
in it side by side: one word found inside a longer translation ("sí", "okay") is as
likely someone at the table saying it while it played, but the VAD also cuts two-word
fragments such as "to everyone" out of an echo at the playback's pauses. Text without
spaces (Chinese, Japanese, Thai) counts characters, and matches as a whole only."""

UNSPACED_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR")
"""Scripts written without spaces between words (Unicode character name prefixes)."""


def languages_near(
    source: str, tables: Iterable[frozenset[str]], listening: Mapping[str, str]
) -> set[str]:
    """The languages played by the phones `source`'s microphone may hear: its own (should
    its echo canceller fail) and those of its table; `listening` maps each participant
    to the language they listen in."""
    table = next((group for group in tables if source in group), frozenset({source}))
    return {listening[pid] for pid in table | {source} if pid in listening}


def normalise(text: str) -> str:
    """Letters, digits and single spaces, case folded: what recognisers agree on."""
    kept = "".join(
        ch if unicodedata.category(ch)[0] in "LNM" else " " for ch in text.casefold()
    )
    return " ".join(kept.split())


@dataclass(eq=False)
class _Played:
    lang: str
    text: str
    """Normalised."""
    queued: float
    started: float | None = None
    ended: float | None = None


class PlayedTranslations:
    """What a room's listeners were played, per language; event-loop only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._played: dict[tuple[str, str], _Played] = {}

    def spoken(self, utterance_id: str, lang: str, text: str) -> None:
        """Speech of the translation `text` into `lang` went to its playout."""
        key = (utterance_id, lang)
        if key not in self._played:
            self._forget_old()
            self._played[key] = _Played(lang, normalise(text), self._clock())

    def started(self, utterance_id: str, lang: str, at: float) -> None:
        """Its first frame left the server at `at` (`time.monotonic()`)."""
        played = self._played.get((utterance_id, lang))
        if played is not None and played.started is None:
            played.started = at

    def ended(self, utterance_id: str, lang: str, at: float) -> None:
        """Its last frame left the server at `at`."""
        played = self._played.get((utterance_id, lang))
        if played is not None:
            played.ended = at

    def heard_back(self, utterance: Utterance, langs: Collection[str]) -> bool:
        """Whether `utterance` is a translation into one of `langs` (those played near
        its microphone) heard back while it played or up to `ECHO_DELAY` later."""
        heard = normalise(utterance.transcript or "")
        last_voiced = utterance.stamps.get(Stage.LAST_VOICED)
        if not heard or last_voiced is None:
            return False
        first_voiced = last_voiced - utterance.duration
        unspaced = _unspaced(heard)
        heard_words = list(heard) if unspaced else heard.split()
        for played in self._played.values():
            if played.started is None or played.lang not in langs:
                continue
            if utterance.source_lang is not None and played.lang != utterance.source_lang:
                continue
            if last_voiced < played.started:
                continue
            if played.ended is not None and first_voiced > played.ended + ECHO_DELAY:
                continue
            if _similar(heard, heard_words, played.text, unspaced):
                return True
        return False

    def _forget_old(self) -> None:
        cutoff = self._clock() - REMEMBERED
        for key in [k for k, p in self._played.items() if p.queued < cutoff]:
            del self._played[key]


def _similar(heard: str, heard_words: list[str], played: str, unspaced: bool) -> bool:
    """`heard_words` are `heard`'s words, or its characters where `unspaced`."""
    if len(heard_words) < FEWEST_WORDS:
        if SequenceMatcher(None, heard, played, autojunk=False).ratio() >= SIMILAR:
            return True
        return not unspaced and len(heard_words) == 2 and f" {heard} " in f" {played} "
    played_words = set(played.replace(" ", "")) if unspaced else set(played.split())
    found = sum(1 for word in heard_words if word in played_words)
    return found >= SIMILAR * len(heard_words)


def _unspaced(text: str) -> bool:
    letters = text.replace(" ", "")
    unspaced = sum(1 for ch in letters if unicodedata.name(ch, "").startswith(UNSPACED_SCRIPTS))
    return unspaced > len(letters) / 2
