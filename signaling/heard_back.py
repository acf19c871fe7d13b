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
(0.3-1 s measured on the simulated table), with room to spare."""

REMEMBERED = 60.0
"""Seconds after it started that a played translation is kept."""

SIMILAR = 0.8
"""Share of the heard text that must be found, in order, in a played one."""

WHOLE_BELOW = 12
"""Heard text shorter than this (letters and digits) must match a played text as a whole:
a word or two found inside a longer translation ("sí", "okay") is as likely someone at
the table saying it while it played."""


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
    seconds: float = 0.0


class PlayedTranslations:
    """What a room's listeners were played, per language; event-loop only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._played: dict[tuple[str, str], _Played] = {}

    def spoken(self, utterance_id: str, lang: str, text: str, seconds: float) -> None:
        """`seconds` more of the translation `text` into `lang` went to its playout."""
        key = (utterance_id, lang)
        played = self._played.get(key)
        if played is None:
            self._forget_old()
            played = self._played[key] = _Played(lang, normalise(text), self._clock())
        played.seconds += seconds

    def started(self, utterance_id: str, lang: str, at: float) -> None:
        """Its first frame left the server at `at` (`time.monotonic()`)."""
        played = self._played.get((utterance_id, lang))
        if played is not None and played.started is None:
            played.started = at

    def heard_back(self, utterance: Utterance, langs: Collection[str]) -> bool:
        """Whether `utterance` is a translation into one of `langs` (those played near
        its microphone) heard back while it played or up to `ECHO_DELAY` later."""
        heard = normalise(utterance.transcript or "")
        last_voiced = utterance.stamps.get(Stage.LAST_VOICED)
        if not heard or last_voiced is None:
            return False
        first_voiced = last_voiced - utterance.duration
        for played in self._played.values():
            if played.started is None or played.lang not in langs:
                continue
            if utterance.source_lang is not None and played.lang != utterance.source_lang:
                continue
            ended = played.started + played.seconds + ECHO_DELAY
            if last_voiced < played.started or first_voiced > ended:
                continue
            if _similar(heard, played.text):
                return True
        return False

    def _forget_old(self) -> None:
        cutoff = self._clock() - REMEMBERED
        for key in [k for k, p in self._played.items() if p.queued < cutoff]:
            del self._played[key]


def _similar(heard: str, played: str) -> bool:
    matcher = SequenceMatcher(None, heard, played, autojunk=False)
    if len(heard.replace(" ", "")) < WHOLE_BELOW:
        return matcher.ratio() >= SIMILAR
    found = sum(block.size for block in matcher.get_matching_blocks())
    return found >= SIMILAR * len(heard)
