"""Kokoro-82M text to speech through kokoro-onnx, streamed piece by piece.

espeak-ng (bundled with kokoro-onnx) turns most languages into phonemes;
Japanese and Chinese go through misaki's G2P instead, which espeak garbles.
Languages absent from `KOKORO_LANGUAGES` are left to SeamlessM4T's vocoder.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from kokoro_onnx import Kokoro
from kokoro_onnx.config import SAMPLE_RATE as KOKORO_RATE
from kokoro_onnx.session import resolve_providers

from ai.kokoro_voices import BRITISH_ENGLISH, KOKORO_LANGUAGES, KokoroLanguage
from ai.resample import SPEECH_RATE, to_speech_rate
from ai.tts_pace import SynthesisPace
from ai.utterance import Audio
from ai.worker import PriorityWorker

__all__ = ["KOKORO_LANGUAGES", "KokoroSettings", "KokoroTTS", "split_for_speech"]

log = logging.getLogger(__name__)

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[。！？])")
_BREAK = re.compile(r"(?<=[，、；：])\s*|\s+")
_CLAUSE_MARK = re.compile(r"[,;:，、；：]$")
_SHORT_WORD = 3
"""Letters in the longest word counted as a function word (the, of, at, de, la, une)."""
_SPEAKABLE = re.compile(r"\w")
_PITCH_MARKS = frozenset("_-^j")
_LONGER_FIRST = 1.25
"""Each try at a plan that keeps ahead of playback starts with a first piece this much longer."""


@dataclass(frozen=True, slots=True)
class KokoroSettings:
    model: Path
    voices: Path
    threads: int = 0
    """ONNX Runtime intra-op threads; 0 lets it use every core."""
    speed: float = 1.0
    sentence_pause: float = 0.2
    """Silence after each streamed piece (a sentence or a part of one) but the last."""
    first_audio_seconds: float = 0.5
    """The time to first audio a streamed translation aims at: its first piece is cut
    as short as Kokoro's measured pace says it must be, down to `shortest_chars`."""
    shortest_chars: int = 12
    """No shorter piece (about two words), unless a sentence is: Kokoro says a short
    piece badly ("de la tarde." alone came out as "de la charde")."""
    first_chunk_chars: int = 60
    """The first piece's most characters. When no first piece up to this long lets each
    piece be ready before the one before has played, sentences are spoken whole
    (bench/tts_first_piece.py: on two loaded cores, fixed 25-character first pieces paused
    sentences 1.2-1.6 s midway)."""
    first_piece_patience: float = 1.5
    """How much later than aimed a first piece may start, so that a translation being
    heard does not stop midway: a pause inside a sentence is worse than a later start."""
    stall_tolerance: float = 0.25
    """Most silence a plan may add inside a translation, as predicted from the pace."""
    pace_margin: float = 1.1
    """Predicted synthesis times are stretched by this much, for load that comes and goes."""
    max_chunk_chars: int = 200
    """No piece longer, so no chunk keeps listeners waiting long."""
    ja_dictionary: Path | None = None
    """OpenJTalk dictionary folder; None uses pyopenjtalk's own (downloaded on first use)."""
    british_english: bool = False


class KokoroTTS:
    """A `SpeechSynthesizer`: one ONNX session, shared by every room.

    Synthesis runs on this engine's own worker thread, one piece at a time (ONNX
    Runtime parallelises inside each), so the event loop never blocks. Pieces are
    taken in the order they are due (see `stream`), whichever room they are for.
    """

    def __init__(self, settings: KokoroSettings) -> None:
        self.settings = settings
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        # Idle workers would otherwise spin, stealing the cores torch and the loop need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(
            str(settings.model), options, providers=resolve_providers()
        )
        self._kokoro = Kokoro.from_session(session, str(settings.voices))
        self._worker = PriorityWorker("kokoro")
        self.pace = SynthesisPace()
        self._streaming = 0
        """Streams being spoken now (event loop only)."""
        self._clock = time.monotonic
        self._g2p: dict[str, Callable[[str], str]] = {}
        self.languages = self._available_languages()

    def speaks(self, lang: str) -> bool:
        return lang in self.languages

    def default_voice(self, lang: str) -> str:
        table = self._table(lang)
        return (table.female + table.male)[0]

    def synthesize(self, text: str, lang: str, voice: str) -> Audio:
        """Blocking: the whole text at 48 kHz (for warm-up, tests and benches).

        Nobody waits here for a first piece, so sentences are not cut short: a test
        speaker's pause mid-sentence would let the VAD cut the utterance there."""
        plan = self._plan(text, lang, voice, whole=True)
        pieces = [self._speak(p, lang, voice, pause) for p, pause in plan]
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    async def stream(self, text: str, lang: str, voice: str) -> AsyncGenerator[Audio, None]:
        """48 kHz chunks, one per piece; the next is synthesized while this one plays.

        The worker takes pieces by the latest moment each can start and still be ready
        when it is needed: a later piece when the piece before it has played, a first
        piece `first_audio_seconds` + `first_piece_patience` after it was asked for. So
        a translation being heard is not stopped midway for another's first piece
        unless it can spare the time.
        Streams running at once share the worker, which the plan allows for. Closing
        the iterator early cancels the piece not yet started; one already on the worker
        finishes and is dropped.
        """
        plan = self._plan(text, lang, voice, sharing=self._streaming + 1)

        def start(i: int, needed_in: float) -> Future[Audio]:
            piece, pause = plan[i]
            making = self.pace.seconds_to_make(self.pace.audio_seconds(lang, len(piece)))
            latest_start = self._clock() + needed_in - making
            return self._worker.submit(latest_start, self._speak, piece, lang, voice, pause)

        s = self.settings
        current = start(0, s.first_audio_seconds + s.first_piece_patience) if plan else None
        self._streaming += 1
        try:
            for i in range(len(plan)):
                assert current is not None
                chunk = await asyncio.wrap_future(current)
                current = start(i + 1, len(chunk) / SPEECH_RATE) if i + 1 < len(plan) else None
                yield chunk
        finally:
            self._streaming -= 1
            if current is not None:
                current.cancel()

    def close(self, wait: bool = True) -> None:
        """Cancels queued synthesis; with `wait`, blocks until the running piece ended."""
        self._worker.shutdown(wait)

    def _table(self, lang: str) -> KokoroLanguage:
        table = self.languages.get(lang)
        if table is None:
            raise ValueError(f"Kokoro does not speak {lang!r} here")
        return table

    def _plan(self, text: str, lang: str, voice: str, whole: bool = False, sharing: int = 1
              ) -> list[tuple[str, float]]:
        """Validate, then cut the text into (piece, pause after) in speaking order.

        With `whole`, sentences up to `max_chunk_chars`. Otherwise the shortest first
        piece, from what the measured pace allows up to `first_chunk_chars`, after which
        pieces grow as fast as the pace allows and each is ready in time; failing that,
        sentences whole, so a slow synthesizer pauses between sentences, not inside one.
        `sharing` streams take turns on the one worker, so each piece takes that many
        times as long to be ready.
        """
        self._table(lang)
        if voice not in self._kokoro.voices:
            raise ValueError(f"unknown Kokoro voice {voice!r}")
        s = self.settings
        if not whole:
            slowdown = s.pace_margin * sharing
            next_chars = self._next_chars_for(lang, slowdown)
            first = self._first_chars(lang, slowdown)
            while first <= s.first_chunk_chars:
                plan = self._paused(split_for_speech(
                    text, s.max_chunk_chars, first, next_chars, s.shortest_chars
                ))
                if len(plan) == 1 or self._stall(plan, lang, slowdown) <= s.stall_tolerance:
                    return plan
                first = math.ceil(first * _LONGER_FIRST)
        return self._paused(split_for_speech(text, s.max_chunk_chars, s.max_chunk_chars))

    def _paused(self, pieces: list[str]) -> list[tuple[str, float]]:
        pause = self.settings.sentence_pause
        return [(p, pause if i < len(pieces) - 1 else 0.0) for i, p in enumerate(pieces)]

    def _first_chars(self, lang: str, slowdown: float) -> int:
        s = self.settings
        audio = self.pace.audio_made_within(s.first_audio_seconds / slowdown)
        chars = self.pace.chars_lasting(lang, audio)
        return int(min(max(chars, s.shortest_chars), s.first_chunk_chars))

    def _next_chars_for(self, lang: str, slowdown: float) -> Callable[[int], float]:
        """The longest piece that can be made while one of n characters plays."""
        s, pace = self.settings, self.pace

        def next_chars(chars: int) -> float:
            playing = pace.audio_seconds(lang, chars) + s.sentence_pause
            return pace.chars_lasting(lang, pace.audio_made_within(playing / slowdown))

        return next_chars

    def _stall(self, plan: list[tuple[str, float]], lang: str, slowdown: float) -> float:
        """Predicted silence inside the translation: pieces are made back to back and
        each plays once made and the one before has played."""
        made = played = stall = 0.0
        for i, (piece, pause) in enumerate(plan):
            audio = self.pace.audio_seconds(lang, len(piece))
            made += self.pace.seconds_to_make(audio) * slowdown
            if i:
                stall += max(0.0, made - played)
            played = max(made, played) + audio + pause
        return stall

    def _speak(self, piece: str, lang: str, voice: str, pause: float) -> Audio:
        table = self._table(lang)
        g2p = self._g2p.get(table.kokoro_lang)
        text = g2p(piece) if g2p else piece
        began = time.perf_counter()
        audio, rate = self._kokoro.create(
            text, voice=voice, speed=self.settings.speed, lang=table.kokoro_lang,
            is_phonemes=g2p is not None,
        )
        assert rate == KOKORO_RATE
        self.pace.record(lang, len(piece), len(audio) / rate, time.perf_counter() - began)
        speech = to_speech_rate(np.asarray(audio, dtype=np.float32), rate)
        return np.concatenate([speech, np.zeros(round(pause * SPEECH_RATE), np.float32)])

    def _available_languages(self) -> dict[str, KokoroLanguage]:
        known = set(self._kokoro.voices.keys())
        tables = dict(KOKORO_LANGUAGES)
        if self.settings.british_english:
            tables["eng"] = BRITISH_ENGLISH
        available: dict[str, KokoroLanguage] = {}
        for lang, table in tables.items():
            voices = KokoroLanguage(
                table.kokoro_lang,
                tuple(v for v in table.female if v in known),
                tuple(v for v in table.male if v in known),
                table.g2p,
            )
            if not voices.female + voices.male:
                log.warning("no Kokoro voices for %s in %s", lang, self.settings.voices)
                continue
            if table.g2p == "misaki":
                try:
                    self._g2p[table.kokoro_lang] = self._misaki(table.kokoro_lang)
                except (ImportError, OSError, RuntimeError) as error:
                    log.warning("%s is left to SeamlessM4T: misaki G2P unusable (%s)", lang, error)
                    continue
            available[lang] = voices
        return available

    def _misaki(self, kokoro_lang: str) -> Callable[[str], str]:
        if kokoro_lang == "ja":
            return _japanese_g2p(self.settings.ja_dictionary)
        if kokoro_lang == "zh":
            return _chinese_g2p()
        raise ValueError(f"no misaki G2P wired for {kokoro_lang!r}")


def split_for_speech(
    text: str, max_chars: int = 200, first_chars: int = 25,
    next_chars: Callable[[int], float] | None = None, shortest: int | None = None,
) -> list[str]:
    """Sentences, cut into pieces that start short and grow: the first piece at most
    `first_chars` long, each next one at most `next_chars(length of the one before)`
    (never over `max_chars`; without `next_chars`, the rest of the sentence whole), and
    no piece after the first shorter than `shortest` (by default `first_chars`). Cuts
    fall at clause marks, else where a phrase starts; where none comes within that
    length, at the first up to twice it, rather than inside a phrase.

    Kokoro's time grows with the audio it makes, so the first piece's length sets when
    the first audio comes; growing pieces let each be synthesized while the one before
    plays (see `bench/tts_first_piece.py`). Pieces without a letter or digit are
    dropped: there is nothing to say.
    """
    sentences = [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]
    pieces: list[str] = []
    limit: float = first_chars
    least = first_chars if shortest is None else shortest
    for sentence in sentences:
        rest = sentence
        while rest:
            head = least if pieces else 0  # only the first piece may be shorter
            piece, rest = (rest, "") if len(rest) <= limit else _cut(
                rest, limit, min(max_chars, 2 * limit), head, least
            )
            if _SPEAKABLE.search(piece):
                pieces.append(piece)
                grown = next_chars(len(piece)) if next_chars else max_chars
                limit = min(max_chars, max(least, grown))
    return pieces


def _cut(
    text: str, limit: float, most: float, shortest_head: int, shortest_tail: int
) -> tuple[str, str]:
    """Cut `text` at its best break: the latest clause mark within `limit` characters,
    else the latest phrase start ("the station | at three": a short word after a long
    one), else the first of either up to `most`; a text no longer than `most` without
    one stays whole, a longer one is cut at the latest space within `limit`.

    Kokoro says a short piece badly ("de la tarde." alone came out as "de la charde"),
    so each side keeps its shortest length, and in spaced text is never a lone word."""
    spaced = " " in text
    breaks: list[tuple[int, int, int, int]] = []  # (kind, head length, cut from, cut to)
    for found in _BREAK.finditer(text):
        head, tail = text[: found.start()].rstrip(), text[found.end() :]
        if len(head) < shortest_head or len(tail) < max(1, shortest_tail):
            continue
        if spaced and (len(head.split()) < 2 or len(tail.split()) < 2):
            continue
        kind = 2 if _CLAUSE_MARK.search(head) else int(_phrase_starts(head, tail))
        breaks.append((kind, len(head), found.start(), found.end()))
    natural = [b for b in breaks if b[0] and b[1] <= most]
    within = [b for b in breaks if b[1] <= limit]
    chosen = max([b for b in natural if b[1] <= limit], default=None) or (
        natural[0] if natural else None
    )
    if chosen is None and len(text) > most:
        chosen = within[-1] if within else (breaks[0] if breaks else None)
    if chosen is None:
        return text, ""
    return text[: chosen[2]].rstrip(), text[chosen[3] :]


def _phrase_starts(head: str, tail: str) -> bool:
    """Function words (articles, prepositions, pronouns) are short and open a phrase."""
    last, following = head.split()[-1], tail.split()[0]
    return len(_letters(last)) > _SHORT_WORD >= len(_letters(following))


def _letters(word: str) -> str:
    return "".join(c for c in word if c.isalnum())


def _is_cjk(text: str) -> bool:
    return bool(text) and "\u3000" <= text[0] <= "\u9fff"


def _japanese_g2p(dictionary: Path | None) -> Callable[[str], str]:
    import pyopenjtalk
    from misaki import ja

    if dictionary is not None:
        if not (dictionary / "sys.dic").is_file():
            raise OSError(f"no OpenJTalk dictionary in {dictionary}")
        pyopenjtalk.OPEN_JTALK_DICT_DIR = str(dictionary).encode()
    elif not Path(os.fsdecode(pyopenjtalk.OPEN_JTALK_DICT_DIR)).is_dir():
        raise OSError("pyopenjtalk has no dictionary yet: run `python app.py --download-models`")
    g2p = ja.JAG2P(version="pyopenjtalk")

    def phonemes(text: str) -> str:
        return _without_pitch_marks(g2p(text)[0])

    return phonemes


def _without_pitch_marks(output: str) -> str:
    """misaki 0.9's pyopenjtalk path appends a pitch string as long as the phonemes."""
    half = len(output) // 2
    if len(output) % 2 == 0 and half and set(output[half:]) <= _PITCH_MARKS:
        return output[:half]
    return output


def _chinese_g2p() -> Callable[[str], str]:
    import jieba
    from misaki import zh

    jieba.setLogLevel(logging.WARNING)
    g2p = zh.ZHG2P()

    def phonemes(text: str) -> str:
        return str(g2p(text)[0])

    return phonemes
