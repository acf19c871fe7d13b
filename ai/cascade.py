"""The cascade engine: Whisper hears, an NLLB/M2M100 text model translates (CTranslate2).

Everything here blocks and may take a second; the async face with input checks
is `ai.translator.CascadeTranslator`. One object holds the one copy of both
models that every room shares.

A batch of utterances costs, whatever their number and targets:
- ONE Whisper encoder pass over the batch (`encode`); language identification
  (`detect_language`) and decoding (`generate`) both reuse its output, so
  detection costs no second 30 s encoder pass (faster-whisper's `transcribe`
  with no language pays 0.67 s more for it on 2 cores, see feasibility.md);
- ONE Whisper `generate` over every row: each utterance's transcript, plus a
  `translate` row where Whisper itself writes the English;
- ONE `translate_batch` of the text model over every (utterance, target) pair.

Source language: among the languages Whisper hears, the one with the highest
probability, the speaker's declared language counting `PRIOR_WEIGHT` times
its probability. So a Spanish speaker's mumbled "sí" stays Spanish, while a
sentence Whisper finds clearly English is heard as English.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ctranslate2
import numpy as np
import sentencepiece as spm
from faster_whisper.feature_extractor import FeatureExtractor
from tokenizers import Tokenizer

from ai.engines import SpeechResult
from ai.languages import BY_WHISPER, LANGUAGES
from ai.utterance import PIPELINE_RATE, Audio

PRIOR_WEIGHT = 5.0
"""How much likelier than the declared language another must sound to win.

Whisper-base gave Kokoro's Spanish 0.98 for "es" (feasibility.md): a switch of
language stands far above 5x, while the declared language keeps short or
accented utterances whose runner-up is a near neighbour (Portuguese, Catalan)."""

TOKENS_PER_SECOND = 8
"""Decode budget per second of speech: speech runs at 3-5 subword tokens a second."""

WHISPER_MAX_TOKENS = 440
"""Whisper's decoder holds 448 positions, four of which the prompt takes."""

WHISPER_FRAMES = 3000
"""Whisper's encoder reads at most 30 s of 10 ms frames."""

FRAMES_PER_SECOND = 100

WINDOW_MARGIN_S = 1.0
"""Silence after the speech in the encoder's window, which is cut to whole seconds.

Whisper pads every clip to 30 s, but CTranslate2's encoder takes a shorter window,
and its cost grows faster than the window (attention): a 3.9 s utterance took 0.33-0.47 s
to encode in a 5 s window against 7.0 s in 30 s (whisper-base int8, 2 busy cores), with
the same Spanish words and English content (`bench/whisper_window.py`)."""

EnglishBy = Literal["whisper", "mt"]


def token_budget(samples: int) -> int:
    return int(TOKENS_PER_SECOND * samples / PIPELINE_RATE) + 10


def window_frames(samples: int) -> int:
    """Mel frames in the encoder's window for a clip: whole seconds with a margin."""
    seconds = math.ceil(samples / PIPELINE_RATE + WINDOW_MARGIN_S)
    return min(WHISPER_FRAMES, seconds * FRAMES_PER_SECOND)


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    return device


def pick_compute_type(device: str, compute_type: str = "auto") -> str:
    """int8 on a CPU (2-4x faster than float32 there), float16 on a GPU."""
    if compute_type != "auto":
        return compute_type
    return "float16" if device == "cuda" else "int8"


@dataclass(frozen=True, slots=True)
class CascadeJob:
    audio: Audio
    source_lang: str | None
    """Pinned by the speaker: no detection. None: detected."""
    targets: tuple[str, ...]
    prior: str | None = None
    """The language the speaker declared, favoured by detection."""


class WhisperEars:
    """A CTranslate2 Whisper model and its tokenizer: hears, identifies, writes English."""

    def __init__(self, model: ctranslate2.models.Whisper, tokenizer: Tokenizer) -> None:
        if not model.is_multilingual:
            raise ValueError("an English-only Whisper model cannot identify languages")
        self.model = model
        self.tokenizer = tokenizer
        self.features = FeatureExtractor(feature_size=model.n_mels)
        self._eot = self._token("<|endoftext|>")
        self._prompt_start = [self._token("<|startoftranscript|>")]
        self._tasks = {task: self._token(f"<|{task}|>") for task in ("transcribe", "translate")}
        self._no_timestamps = self._token("<|notimestamps|>")
        self.languages = frozenset(
            code for code, whisper in _whisper_codes().items()
            if tokenizer.token_to_id(f"<|{whisper}|>") is not None
        )
        """Our codes of the languages this model hears."""

    @classmethod
    def load(
        cls, path: str | Path, device: str, compute_type: str, threads: int = 0
    ) -> WhisperEars:
        model = ctranslate2.models.Whisper(
            str(path), device=device, compute_type=compute_type, intra_threads=threads
        )
        return cls(model, Tokenizer.from_file(str(Path(path) / "tokenizer.json")))

    def _token(self, text: str) -> int:
        token = self.tokenizer.token_to_id(text)
        if token is None:
            raise ValueError(f"the Whisper tokenizer lacks {text}")
        return int(token)

    def encode(self, audios: Sequence[Audio], frames: int | None = None) -> np.ndarray:
        """The encoder's output for each clip, on the CPU: [batch, frames / 2, width].

        The window holds `frames` mel frames; None fits it to the longest clip."""
        frames = frames or max(window_frames(len(audio)) for audio in audios)
        mels = np.zeros((len(audios), self.model.n_mels, frames), np.float32)
        for row, audio in enumerate(audios):
            mel = self.features(audio, padding=0)[:, :frames]
            mels[row, :, : mel.shape[1]] = mel
        encoded = self.model.encode(ctranslate2.StorageView.from_array(mels), to_cpu=True)
        return np.array(encoded, copy=True)  # a view would outlive the StorageView's memory

    def language_odds(self, encoded: np.ndarray) -> list[dict[str, float]]:
        """Per clip, the probability of each language this model hears (our codes)."""
        found = self.model.detect_language(ctranslate2.StorageView.from_array(encoded))
        odds = []
        for pairs in found:
            by_code: dict[str, float] = {}
            for token, probability in pairs:
                code = BY_WHISPER.get(token.strip("<|>"))
                if code is not None:
                    by_code[code] = probability
            odds.append(by_code)
        return odds

    def write(
        self, encoded: np.ndarray, rows: Sequence[tuple[int, str, str]], budgets: Sequence[int]
    ) -> list[str]:
        """Text per (clip index, language spoken, task) row, in one greedy decode;
        the `translate` task writes English."""
        prompts = [
            [*self._prompt_start, self._token(f"<|{LANGUAGES[lang].whisper}|>"),
             self._tasks[task], self._no_timestamps]
            for _, lang, task in rows
        ]
        states = np.ascontiguousarray(encoded[[index for index, _, _ in rows]])
        results = self.model.generate(
            ctranslate2.StorageView.from_array(states), prompts,
            beam_size=1, max_length=min(WHISPER_MAX_TOKENS, max(budgets)),
        )
        texts = []
        for result, budget in zip(results, budgets, strict=True):
            ids = [t for t in result.sequences_ids[0][:budget] if t < self._eot]
            texts.append(self.tokenizer.decode(ids).strip())
        return texts


def _whisper_codes() -> dict[str, str]:
    return {code: lang.whisper for code, lang in LANGUAGES.items() if lang.whisper is not None}


class TextTranslator:
    """A CTranslate2 conversion of an NLLB-200 or M2M100 model, with its sentencepiece model.

    NLLB names languages by Flores-200 code (`spa_Latn`), M2M100 by `__es__`;
    which one a model uses is read from its vocabulary.
    """

    def __init__(self, model: ctranslate2.Translator, pieces: spm.SentencePieceProcessor,
                 vocabulary: Collection[str]) -> None:
        self.model = model
        self.pieces = pieces
        self._tokens: dict[str, str] = {}
        for code, lang in LANGUAGES.items():
            if not lang.text_out:
                continue
            for token in (lang.flores, f"__{lang.whisper}__"):
                if token is not None and token in vocabulary:
                    self._tokens[code] = token
                    break
        self.languages = frozenset(self._tokens)
        """Our codes of the languages it reads and writes."""

    @classmethod
    def load(cls, path: str | Path, device: str, compute_type: str, threads: int = 0
             ) -> TextTranslator:
        folder = Path(path)
        model = ctranslate2.Translator(
            str(folder), device=device, compute_type=compute_type, intra_threads=threads
        )
        found = sorted(folder.glob("*.model"))
        if not found:
            raise FileNotFoundError(
                f"no sentencepiece model (sentencepiece.bpe.model) in {folder}: "
                "copy it there from the original model"
            )
        return cls(model, spm.SentencePieceProcessor(model_file=str(found[0])),
                   _vocabulary(folder))

    def translate(self, rows: Sequence[tuple[str, str, str]]) -> list[str]:
        """Translation per (text, source, target) row, in one `translate_batch`."""
        sources = [
            [self._tokens[source], *self.pieces.encode(text, out_type=str), "</s>"]
            for text, source, _ in rows
        ]
        results = self.model.translate_batch(
            sources,
            target_prefix=[[self._tokens[target]] for _, _, target in rows],
            beam_size=1,
            max_decoding_length=min(512, max(2 * len(tokens) + 10 for tokens in sources)),
        )
        texts = []
        specials = set(self._tokens.values()) | {"</s>", "<s>", "<pad>", "<unk>"}
        for result in results:
            pieces = [p for p in result.hypotheses[0] if p not in specials]
            texts.append(self.pieces.decode(pieces).strip())
        return texts


def _vocabulary(folder: Path) -> set[str]:
    for name in ("shared_vocabulary.json", "target_vocabulary.json"):
        if (folder / name).is_file():
            return set(json.loads((folder / name).read_text(encoding="utf-8")))
    for name in ("shared_vocabulary.txt", "target_vocabulary.txt"):
        if (folder / name).is_file():
            return set((folder / name).read_text(encoding="utf-8").splitlines())
    raise FileNotFoundError(f"no CTranslate2 vocabulary file in {folder}")


class Cascade:
    """Whisper and a text translator, with batched blocking calls."""

    def __init__(
        self, ears: WhisperEars, translator: TextTranslator, english_by: EnglishBy = "whisper"
    ) -> None:
        self.ears = ears
        self.translator = translator
        self.english_by = english_by
        self.heard_languages = ears.languages
        self.text_languages = translator.languages | (
            {"eng"} if english_by == "whisper" else set()
        )
        """Languages it can write: the text model's, and English by Whisper itself."""
        self.readable_languages = translator.languages

    @classmethod
    def load(
        cls, whisper: str | Path, translator: str | Path, *, device: str = "auto",
        compute_type: str = "auto", threads: int = 0, english_by: EnglishBy = "whisper",
    ) -> Cascade:
        where = pick_device(device)
        kind = pick_compute_type(where, compute_type)
        return cls(
            WhisperEars.load(whisper, where, kind, threads),
            TextTranslator.load(translator, where, kind, threads),
            english_by,
        )

    def detect(self, odds: dict[str, float], prior: str | None) -> str:
        def weight(code: str) -> float:
            return odds[code] * (PRIOR_WEIGHT if code == prior else 1.0)

        heard = [code for code in odds if code in self.heard_languages]
        return max(heard, key=weight) if heard else (prior or "eng")

    def translate_speech(
        self, jobs: Sequence[CascadeJob], text_later: bool = False
    ) -> list[SpeechResult]:
        """Transcripts, and each job's targets; with `text_later`, only the targets Whisper
        writes itself (the spoken language, English): the text model's come after."""
        encoded = self.ears.encode([job.audio for job in jobs])
        sources = [job.source_lang for job in jobs]
        undeclared = [index for index, job in enumerate(jobs) if job.source_lang is None]
        if undeclared:
            odds = self.ears.language_odds(encoded[undeclared])
            for index, found in zip(undeclared, odds, strict=True):
                sources[index] = self.detect(found, jobs[index].prior)
        spoken = [source or "eng" for source in sources]

        rows: list[tuple[int, str, str]] = []
        for index, job in enumerate(jobs):
            rows.append((index, spoken[index], "transcribe"))
            if self._whisper_writes_english(spoken[index], job.targets):
                rows.append((index, spoken[index], "translate"))
        budgets = [token_budget(len(jobs[index].audio)) for index, _, _ in rows]
        written = dict(zip(rows, self.ears.write(encoded, rows, budgets), strict=True))

        results = [
            SpeechResult(written[index, spoken[index], "transcribe"], spoken[index])
            for index in range(len(jobs))
        ]
        text_rows: list[tuple[int, str, str, str]] = []
        for index, (job, result) in enumerate(zip(jobs, results, strict=True)):
            for target in job.targets:
                if target == result.source_lang:
                    result.translations[target] = result.transcript
                elif target == "eng" and (index, result.source_lang, "translate") in written:
                    result.translations[target] = written[index, result.source_lang, "translate"]
                elif not result.transcript or result.source_lang not in self.readable_languages:
                    result.translations[target] = ""  # nothing heard, or nothing to read it
                else:
                    text_rows.append((index, result.transcript, result.source_lang, target))
        if text_rows and not text_later:
            texts = self.translator.translate([row[1:] for row in text_rows])
            for (index, _, _, target), text in zip(text_rows, texts, strict=True):
                results[index].translations[target] = text
        return results

    def _whisper_writes_english(self, source: str, targets: Sequence[str]) -> bool:
        if "eng" not in targets or source == "eng":
            return False
        return self.english_by == "whisper" or source not in self.translator.languages

    def translate_text(self, texts: Sequence[str], source_lang: str, target_lang: str
                       ) -> list[str]:
        return self.translator.translate([(text, source_lang, target_lang) for text in texts])
