"""English for a Spanish speaker: Whisper's own translate task against NLLB-200 600M, timed.

    .venv/bin/python -m bench.english_by              # 5 rounds over 2 Spanish sentences

The cascade engine writes English either with Whisper (`--english-from whisper`, the
default: one more row in the decode that writes the transcript) or with its text
translator (`--english-from mt`: NLLB reads the transcript). This prints what each costs
after the transcript, per utterance, on this machine:

- Whisper: real whisper-base int8 (.assets/) hears real Kokoro ef_dora Spanish, the two
  sentences of tests/fixtures/cascade.py. `WhisperEars.write` runs once with the
  transcribe row alone and once with the translate row beside it, as `Cascade` does;
  the difference is Whisper's price for English. Its English and content words are printed.
- NLLB: a model of facebook/nllb-200-distilled-600M's shape with random weights (no
  registry ships the real ones), int8, loaded by the product's `TextTranslator`, built
  once into .assets/bench/. Random weights never end a sentence, so its decode is fixed
  at the length of Whisper's English (Whisper's own token count; NLLB's 256k vocabulary
  cuts Spanish and English into about as many or fewer pieces). Only speed is measured:
  which of the two writes better English needs the real NLLB weights.

Both run interleaved, alternating which goes first, so the machine's load falls on both.
Times are medians in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from ai.cascade import TextTranslator, WhisperEars, token_budget
from ai.models import fetch_test_assets
from ai.resample import SPEECH_RATE
from ai.tts import KokoroSettings, KokoroTTS
from ai.utterance import PIPELINE_RATE, Audio
from tests.fixtures.cascade import (
    ENGLISH_CONTENT,
    NLLB_600M,
    SPANISH,
    build_random_nllb,
    content_words,
)

ROOT = Path(__file__).resolve().parents[1]


def spanish_clips(assets_kokoro: Path, voices: Path) -> list[Audio]:
    tts = KokoroTTS(KokoroSettings(assets_kokoro, voices))
    try:
        return [
            resample_poly(tts.synthesize(text, "spa", "ef_dora"), PIPELINE_RATE, SPEECH_RATE)
            .astype(np.float32)
            for text in SPANISH
        ]
    finally:
        tts.close()


def nllb_600m(cache: Path) -> Path:
    folder = cache / "random-nllb-200-600M-int8"
    model = folder / "ct2"
    if not (model / "model.bin").is_file():
        print(f"  .. building a random NLLB-200 600M-shaped model into {folder} (once)")
        if folder.exists():
            shutil.rmtree(folder)
        build_random_nllb(folder, NLLB_600M, quantization="int8")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    assets = fetch_test_assets(ROOT / ".assets")
    clips = spanish_clips(assets.kokoro_model, assets.kokoro_voices)
    ears = WhisperEars.load(assets.whisper_base, "cpu", "int8")
    nllb = TextTranslator.load(nllb_600m(ROOT / ".assets" / "bench"), "cpu", "int8")
    spa, eng = nllb._tokens["spa"], nllb._tokens["eng"]

    def whisper(index: int, rows: list[tuple[int, str, str]]) -> tuple[float, list[str]]:
        encoded = ears.encode([clips[index]])
        started = time.perf_counter()
        texts = ears.write(encoded, rows, [token_budget(len(clips[index]))] * len(rows))
        return time.perf_counter() - started, texts

    def by_nllb(source_tokens: int, english_tokens: int) -> float:
        source = [spa, *["madeupword0"] * source_tokens, "</s>"]
        started = time.perf_counter()
        nllb.model.translate_batch(
            [source], target_prefix=[[eng]], beam_size=1,
            min_decoding_length=english_tokens + 1, max_decoding_length=english_tokens + 1,
        )
        return time.perf_counter() - started

    def tokens(text: str) -> int:
        return len(ears.tokenizer.encode(text, add_special_tokens=False).ids)

    transcribe = [(0, "spa", "transcribe")]
    both = [*transcribe, (0, "spa", "translate")]
    lengths = []
    for index, clip in enumerate(clips):  # untimed: the texts, and a warm-up of both models
        _, (spanish, english) = whisper(index, both)
        lengths.append((tokens(spanish), tokens(english)))
        by_nllb(*lengths[-1])
        found = len(ENGLISH_CONTENT[index] & content_words(english))
        print(f"clip {index} ({len(clip) / PIPELINE_RATE:.1f} s) | {spanish} | {english} | "
              f"content words {found}/{len(ENGLISH_CONTENT[index])} | "
              f"tokens es {lengths[-1][0]}, en {lengths[-1][1]}")

    times: dict[str, list[float]] = {"transcribe": [], "transcribe+translate": [], "nllb": []}
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    for round_ in range(args.rounds):
        for index in range(len(clips)):
            sides = ["whisper", "nllb"] if (round_ + index) % 2 == 0 else ["nllb", "whisper"]
            for side in sides:
                if side == "whisper":
                    times["transcribe"].append(whisper(index, transcribe)[0])
                    times["transcribe+translate"].append(whisper(index, both)[0])
                else:
                    times["nllb"].append(by_nllb(*lengths[index]))

    median = {name: 1000 * float(np.median(spent)) for name, spent in times.items()}
    extra = 1000 * float(np.median(np.subtract(times["transcribe+translate"],
                                               times["transcribe"])))
    print(f"\n{len(clips)} clips x {args.rounds} rounds on {os.cpu_count()} cores, medians (ms)")
    print(f"  whisper-base: transcript alone                 {median['transcribe']:7.0f}")
    print(f"  whisper-base: transcript and English together  {median['transcribe+translate']:7.0f}")
    print(f"  = English by Whisper, after the transcript     {extra:7.0f}")
    print(f"  English by NLLB-200 600M int8 (random weights) {median['nllb']:7.0f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
