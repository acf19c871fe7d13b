"""SeamlessM4T v2 through transformers: the blocking model calls, batched.

Everything here runs on the caller's thread and may take seconds; the async
face with input checks is `ai.translator`. One object holds the one copy of
the weights that every room shares.

Speech is translated as a batch of jobs: the speech encoder runs ONCE over the
padded audio of all jobs, then ONE greedy `generate` decodes every
(job, language) pair, each row starting from its own language token and
reading its job's encoder states.

Source-language detection (when a speaker did not declare a language): every
candidate language is decoded as one more row of that same batch, and the
candidate whose output has the highest mean token log-probability wins; its
output is the transcript. Forced into the language actually spoken, the
decoder transcribes, which it does far more confidently than it translates.
Limits: only candidates can be found (a room passes its listeners' languages
plus a few defaults), each candidate costs one decoder row, very short or
mumbled speech may pick a close relative (e.g. Catalan for Spanish), and the
margin is a heuristic, not a calibrated probability. The language the speaker
declared (the job's prior) gets `PRIOR_BONUS` on top of its score.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ai.torch_compat import ensure_torchaudio

ensure_torchaudio()  # transformers imports torchaudio when it is installed

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoProcessor,
    GenerationMixin,
    LogitsProcessor,
    LogitsProcessorList,
    SeamlessM4Tv2Model,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.modeling_outputs import BaseModelOutput  # noqa: E402

from ai.engines import SpeechResult  # noqa: E402
from ai.utterance import PIPELINE_RATE, Audio  # noqa: E402

DEFAULT_MODEL = "facebook/seamless-m4t-v2-large"

DECODE_PREFIX = 2
"""Generated sequences start with the decoder start token, then the language token."""

TOKENS_PER_SECOND = 8
"""Decode budget per second of speech: speech runs at 3-5 subword tokens a second."""

MAX_NEW_TOKENS = 256

PRIOR_BONUS = 0.3
"""Mean token log-probability added to the declared language's score in detection:
another language wins only when the decoder is clearly surer of it (e^0.3, 1.35x
per token), so a short or accented utterance keeps its speaker's language."""


@dataclass(frozen=True, slots=True)
class SpeechJob:
    """One utterance's work: what to translate into, and how to find its language."""

    audio: Audio
    source_lang: str | None
    targets: tuple[str, ...]
    candidates: tuple[str, ...] = ()
    """Languages to try when `source_lang` is None."""
    prior: str | None = None
    """The language the speaker declared: detection favours it."""


class _GreedyLogProbs(LogitsProcessor):
    """Records each row's best next-token log-probability at every step.

    Under greedy decoding that is the log-probability of the token chosen. It
    must run last so that it sees the scores the choice is made on; generate
    appends custom processors after its own.
    """

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.steps.append(torch.log_softmax(scores.float(), dim=-1).amax(dim=-1))
        return scores

    def mean_per_row(
        self, generated: torch.Tensor, eos_id: int, budgets: torch.Tensor
    ) -> list[float]:
        """Mean over each row's own tokens: up to its first EOS and within its budget
        (past either, generate pads the row while others go on)."""
        if not self.steps:
            return [float("-inf")] * generated.shape[0]
        logprobs = torch.stack(self.steps, dim=1).to(generated.device)
        is_eos = (generated == eos_id).int()
        positions = torch.arange(generated.shape[1], device=generated.device)
        valid = (torch.cumsum(is_eos, dim=1) - is_eos == 0) & (positions < budgets[:, None])
        total = (logprobs * valid).sum(dim=1)
        return (total / valid.sum(dim=1).clamp(min=1)).tolist()


class _RowBudgets(StoppingCriteria):
    """Stops each row at its own token budget, so a short utterance batched
    with a long one decodes exactly as it would alone."""

    def __init__(self, budgets: torch.Tensor) -> None:
        self.budgets = budgets

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any
    ) -> torch.BoolTensor:
        done = input_ids.shape[1] - DECODE_PREFIX >= self.budgets
        return done  # type: ignore[return-value]


def token_budget(samples: int) -> int:
    """Most tokens decoded for speech of this many samples."""
    return min(MAX_NEW_TOKENS, int(TOKENS_PER_SECOND * samples / PIPELINE_RATE) + 10)


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def quantize_int8(model: SeamlessM4Tv2Model) -> None:
    """Dynamic int8 for the Linear layers of the speech-to-text path (speech
    encoder, text decoder, LM head), in place; the rest stays as loaded.

    CPU only. On 2 cores (bench/models.py) it decodes twice as fast as bf16 per
    token, but the fp32 weights must be loaded first, so loading peaks near
    12 GiB, and it relies on torch's deprecated `torch.ao` quantization.
    """
    from torch.ao.quantization import quantize_dynamic

    for part in (model.speech_encoder, model.text_decoder):
        quantize_dynamic(part, {torch.nn.Linear}, torch.qint8, inplace=True)
    head = quantize_dynamic(torch.nn.Sequential(model.lm_head), {torch.nn.Linear}, torch.qint8)
    model.lm_head = head[0]
    _return_freed_memory()


def _return_freed_memory() -> None:
    """The replaced fp32 layers sit in reference cycles until collected, and glibc
    keeps freed memory mapped unless asked to give it back."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """AMX or AVX-512 bf16 instructions: where bf16 matrix work beats fp32."""
    try:
        flags = cpuinfo.read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def pick_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    """`auto`: bf16 (fp16 where bf16 is missing) on a GPU; on a CPU, bf16 where it
    has native bf16 instructions, else fp32.

    On such a CPU (bench/models.py, 2 cores) bf16 took a 3 s utterance to three
    languages in 4.0 s against fp32's 5.5 s, in 4.8 GiB against 9.1 GiB. Without
    those instructions bf16 is emulated and slower than fp32. "int8" is faster
    still there, at a cost (`quantize_int8`), so it is asked for, never automatic.
    """
    if dtype == "int8":
        return torch.float32  # weights load in fp32, then `quantize_int8`
    if dtype != "auto":
        chosen = getattr(torch, dtype, None)
        if not isinstance(chosen, torch.dtype):
            raise ValueError(
                f"unknown dtype {dtype!r}; try float32, bfloat16, float16 or int8 (CPU)"
            )
        return chosen
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


class SeamlessM4T:
    """The loaded model and processor, with batched blocking calls."""

    def __init__(self, model: SeamlessM4Tv2Model, processor: Any) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        generation: Any = model.generation_config  # holds SeamlessM4T's own keys
        self._lang_token: dict[str, int] = dict(generation.text_decoder_lang_to_code_id)
        self.text_languages = frozenset(self._lang_token)
        """Languages it can write (and read, as text)."""
        self.speech_languages = frozenset(
            set(getattr(generation, "vocoder_lang_code_to_id", None) or {})
            & set(getattr(generation, "t2u_lang_code_to_id", None) or {})
        )
        """Languages its own vocoder can speak."""
        self.speech_rate = int(model.config.sampling_rate)
        self._eos = int(generation.eos_token_id)

    @classmethod
    def load(
        cls,
        source: str | Path = DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: str = "auto",
        threads: int | None = None,
    ) -> SeamlessM4T:
        """A hub id or a local directory holding a saved model and processor.

        `dtype`: "auto" (see `pick_dtype`), "float32", "bfloat16", "float16", or
        "int8" (CPU: dynamic int8, see `quantize_int8`).
        """
        if threads is not None:
            torch.set_num_threads(threads)
        where = pick_device(device)
        model = SeamlessM4Tv2Model.from_pretrained(str(source), dtype=pick_dtype(where, dtype))
        processor = AutoProcessor.from_pretrained(str(source))
        if dtype == "int8":
            if where.type != "cpu":
                raise ValueError("int8 is a CPU mode; use bfloat16 or float16 on a GPU")
            quantize_int8(model)
        model.to(where)  # type: ignore[arg-type]  # transformers types `to` oddly
        return cls(model, processor)

    def translate_speech(self, jobs: Sequence[SpeechJob]) -> list[SpeechResult]:
        """Each job's translations, transcript and source language.

        A declared source the model cannot write (e.g. Asturian) is translated
        from but gets an empty transcript.
        """
        rows: list[tuple[int, str]] = []
        for index, job in enumerate(jobs):
            wanted = list(job.targets)
            if job.source_lang is None:
                wanted += job.candidates
            elif job.source_lang in self.text_languages:
                wanted.append(job.source_lang)
            rows += [(index, lang) for lang in dict.fromkeys(wanted)]
        texts, scores = self.decode_speech([job.audio for job in jobs], rows) if rows else ([], [])
        by_row = {row: (text, score) for row, text, score in zip(rows, texts, scores, strict=True)}

        results = []
        for index, job in enumerate(jobs):
            source = job.source_lang
            if source is None:
                tried = [lang for lang in job.candidates if (index, lang) in by_row]
                favoured = {
                    lang: by_row[index, lang][1] + (PRIOR_BONUS if lang == job.prior else 0.0)
                    for lang in tried
                }
                source = max(favoured, key=favoured.__getitem__) if favoured else ""
            transcript = by_row[index, source][0] if (index, source) in by_row else ""
            translations = {lang: by_row[index, lang][0] for lang in job.targets}
            results.append(SpeechResult(transcript, source, translations))
        return results

    @torch.inference_mode()
    def decode_speech(
        self, audios: list[Audio], rows: list[tuple[int, str]]
    ) -> tuple[list[str], list[float]]:
        """Text and mean token log-probability per (audio index, language) row:
        one encoder pass over `audios`, one greedy decode over `rows`."""
        features = self.processor.feature_extractor(
            audios, sampling_rate=PIPELINE_RATE, padding=True, return_tensors="pt",
            return_attention_mask=True,
        )
        input_features = features["input_features"].to(self.device, self.dtype)
        frames_mask = features["attention_mask"].to(self.device)
        encoded = self.model.speech_encoder(
            input_features=input_features, attention_mask=frames_mask
        ).last_hidden_state

        pick = torch.tensor([index for index, _ in rows], device=self.device)
        languages = torch.tensor([[self._lang_token[lang]] for _, lang in rows], device=self.device)
        budgets = torch.tensor(
            [token_budget(len(audios[index])) for index, _ in rows], device=self.device
        )
        recorder = _GreedyLogProbs()
        # The model's forward turns this frame-level mask into the encoder-level
        # one only in speech modality; set it on every call since the model is shared.
        self.model.set_modality("speech")
        sequences = GenerationMixin.generate(
            self.model,
            encoder_outputs=BaseModelOutput(last_hidden_state=encoded.index_select(0, pick)),
            attention_mask=frames_mask.index_select(0, pick),
            decoder_input_ids=languages,
            do_sample=False,
            num_beams=1,
            max_new_tokens=int(budgets.max()),
            logits_processor=LogitsProcessorList([recorder]),
            stopping_criteria=StoppingCriteriaList([_RowBudgets(budgets)]),
        )
        generated = sequences[:, DECODE_PREFIX:]
        return self._texts(generated), recorder.mean_per_row(generated, self._eos, budgets)

    @torch.inference_mode()
    def translate_text(self, texts: Sequence[str], source_lang: str, target_lang: str) -> list[str]:
        inputs = self.tokenizer(
            list(texts), src_lang=source_lang, padding=True, return_tensors="pt"
        ).to(self.device)
        languages = torch.tensor([[self._lang_token[target_lang]]] * len(texts), device=self.device)
        budgets = (2 * inputs["attention_mask"].sum(dim=1) + 10).clamp(max=MAX_NEW_TOKENS)
        self.model.set_modality("text")
        sequences = GenerationMixin.generate(
            self.model,
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            decoder_input_ids=languages,
            do_sample=False,
            num_beams=1,
            max_new_tokens=int(budgets.max()),
            stopping_criteria=StoppingCriteriaList([_RowBudgets(budgets)]),
        )
        return self._texts(sequences[:, DECODE_PREFIX:])

    def _texts(self, generated: torch.Tensor) -> list[str]:
        decoded = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [text.strip() for text in decoded]

    @torch.inference_mode()
    def speak(self, text: str, lang: str, speaker_id: int = 0) -> tuple[Audio, int]:
        """The model's own text-to-unit model and vocoder: (16 kHz samples, rate)."""
        inputs = self.tokenizer([text], src_lang=lang, return_tensors="pt").to(self.device)
        waveform, lengths = self.model.generate(
            **inputs,
            tgt_lang=lang,
            speaker_id=speaker_id,
            generate_speech=True,
            text_do_sample=False,
            text_num_beams=1,
            text_max_new_tokens=min(MAX_NEW_TOKENS, 2 * inputs["input_ids"].shape[1] + 10),
        )
        samples = waveform[0, : int(lengths.reshape(-1)[0])].float().cpu().numpy()
        return np.clip(samples, -1.0, 1.0).astype(np.float32), self.speech_rate
