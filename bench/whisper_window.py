"""Whisper's encoder window: the full 30 s against one fitted to the utterance, side by side.

    .venv/bin/python -m bench.whisper_window              # 3 rounds over 2 Spanish sentences

Real whisper-base (int8, CTranslate2, from .assets/) hears real Kokoro ef_dora Spanish,
the two sentences of tests/fixtures/cascade.py, through the product's `WhisperEars`:
`encode` (with the window given), `language_odds`, then `write` of one transcribe and
one translate row, as `Cascade.translate_speech` does for a Spanish speaker and an
English listener. Windows run interleaved in a rotating order, so the machine's load
falls on both alike. Words are printed from the first round; times are medians (s).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from ai.cascade import WHISPER_FRAMES, WhisperEars, token_budget, window_frames
from ai.models import fetch_test_assets
from ai.resample import SPEECH_RATE
from ai.tts import KokoroSettings, KokoroTTS
from ai.utterance import PIPELINE_RATE
from tests.fixtures.cascade import ENGLISH_CONTENT, SPANISH, content_words

STAGES = ("encode", "detect", "write")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    assets = fetch_test_assets(Path(__file__).resolve().parents[1] / ".assets")
    tts = KokoroTTS(KokoroSettings(assets.kokoro_model, assets.kokoro_voices))
    try:
        clips = [
            resample_poly(tts.synthesize(text, "spa", "ef_dora"), PIPELINE_RATE, SPEECH_RATE)
            .astype(np.float32)
            for text in SPANISH
        ]
    finally:
        tts.close()
    ears = WhisperEars.load(assets.whisper_base, "cpu", "int8")
    windows = {"30 s (before)": lambda _: WHISPER_FRAMES, "fitted (now)": window_frames}
    times: dict[str, dict[str, list[float]]] = {w: {s: [] for s in STAGES} for w in windows}
    print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
    turn = 0
    for round_ in range(args.rounds):
        for index, clip in enumerate(clips):
            names = list(windows)
            for name in names[turn % 2:] + names[: turn % 2]:
                frames = windows[name](len(clip))
                started = time.perf_counter()
                encoded = ears.encode([clip], frames)
                encoded_at = time.perf_counter()
                odds = ears.language_odds(encoded)[0]
                detected_at = time.perf_counter()
                budget = token_budget(len(clip))
                spanish, english = ears.write(
                    encoded, [(0, "spa", "transcribe"), (0, "spa", "translate")], [budget] * 2
                )
                written_at = time.perf_counter()
                for stage, spent in zip(STAGES, (encoded_at - started, detected_at - encoded_at,
                                                  written_at - detected_at), strict=True):
                    times[name][stage].append(spent)
                if round_ == 0:
                    content = ENGLISH_CONTENT[index]
                    found = len(content & content_words(english))
                    print(f"{name:<14} clip {index} ({len(clip) / PIPELINE_RATE:.1f} s, "
                          f"{frames} frames) es={odds.get('spa', 0):.2f} | {spanish} | "
                          f"{english} | content words {found}/{len(content)}")
            turn += 1
    print(f"\n{len(clips)} clips x {args.rounds} rounds, whisper-base int8, medians in s")
    print(f"{'window':<14} {'encode':>7} {'detect':>7} {'write':>7} {'total':>7} {'xbefore':>8}")
    totals = {name: np.sum([times[name][s] for s in STAGES], axis=0) for name in windows}
    before = totals[next(iter(windows))]
    for name in windows:
        print(f"{name:<14} " + " ".join(f"{np.median(times[name][s]):7.3f}" for s in STAGES)
              + f" {np.median(totals[name]):7.3f} {np.median(totals[name] / before):8.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
