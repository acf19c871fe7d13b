"""Kokoro's time to first audio on real sentences, for several first-piece policies side by side.

    .venv/bin/python -m bench.tts_first_piece                 # 6 sentences, 1 round
    .venv/bin/python -m bench.tts_first_piece --threads 1 --clock cpu   # as on a quiet core

Real Kokoro int8 weights from .assets/ (`python -m ai.models fetch-test-assets`), voice
af_heart, speaking English sentences of 8-15 words like the cascade's translations. Each
policy is a setting of the product's `split_for_speech` (ai/tts.py), or the product's own
plan ("paced"), which sizes pieces from Kokoro's pace as measured on this run's calls so
far; each piece is spoken by the product's `KokoroTTS` as `stream` would, with its pause
after every piece but the last. Policies run interleaved, sentence by sentence, in an
order that rotates, so the machine's load falls on all of them alike.

Per sentence and policy, the playout is replayed as `KokoroTTS.stream` runs it: one
worker synthesizes the pieces back to back; a piece plays once it is made and the one
before has played. Figures (seconds unless said):
- first: time to first audio, the first piece's synthesis.
- ×old: `first` divided by the first policy's `first` on the same sentence (median). That
  policy speaks each sentence whole, as the old one (60 characters, cut at the first
  clause) did for every sentence up to 60 characters.
- stall: silence inside the sentence because a piece was not ready when the one before
  had played (summed per sentence); "stalled" counts sentences with any stall over 20 ms.
- 1st dur/2nd synth: the first piece's audio (with its pause) over the second piece's
  synthesis time; at or above 1 the second piece is ready before the first has played.
- done: time until the whole sentence has played.
`--clock cpu` (with `--threads 1`, where ONNX Runtime computes on the calling thread)
times each call by that thread's CPU time instead of the wall clock: what an idle core
would take, minus the slowdown a busy neighbour still causes (shared caches, a
hyper-threaded sibling), so it reads a little high.
Then the cost model over every synthesis call: time = fixed + rate × audio seconds
(least squares), which says how much of a short piece's time is the per-call cost.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ai.models import fetch_test_assets
from ai.resample import SPEECH_RATE
from ai.tts import KokoroSettings, KokoroTTS, split_for_speech

SENTENCES = (
    "Good morning everyone, today we are going to talk about the new project.",
    "The train leaves the station at three in the afternoon.",
    "I think we should meet again next week to finish the plan.",
    "Could you send me the report before the meeting on Friday?",
    "My sister lives in a small town near the mountains with her two dogs.",
    "We need more time to test the new version of the application.",
    "The museum opens at nine and closes early on Sundays.",
    "Please remember to bring your laptop and the charger tomorrow morning.",
)


@dataclass(frozen=True)
class Policy:
    name: str
    first_chars: int
    growth: float | None
    """Each next piece at most this many times the one before; None: the rest whole.
    A policy without `first_chars` (0) is the product's own plan from Kokoro's pace."""

    def pieces(self, tts: KokoroTTS, text: str, voice: str) -> list[str]:
        if not self.first_chars:
            return [piece for piece, _ in tts._plan(text, "eng", voice)]
        growth = self.growth
        grow = None if growth is None else (lambda n: growth * n)
        return split_for_speech(text, first_chars=self.first_chars, next_chars=grow)


POLICIES = (
    Policy("whole (old <=60)", 60, None),
    Policy("<=40, grow 2x", 40, 2.0),
    Policy("<=25, grow 2x", 25, 2.0),
    Policy("<=25, rest whole", 25, None),
    Policy("paced (product)", 0, None),
)
OLD = POLICIES[0].name
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}


@dataclass
class Outcome:
    first: list[float] = field(default_factory=list)
    first_chars: list[int] = field(default_factory=list)
    pieces: list[int] = field(default_factory=list)
    stall: list[float] = field(default_factory=list)
    headroom: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)


def play(tts: KokoroTTS, pieces: list[str], voice: str, calls: list[tuple[float, float]],
         clock: Callable[[], float]) -> tuple[float, float, float | None, float]:
    """Synthesizes the pieces back to back; returns (first audio, stall, 1st dur/2nd synth,
    end of playout), on the timeline `KokoroTTS.stream` would give them."""
    pause = tts.settings.sentence_pause
    made, playing_until, stall = 0.0, 0.0, 0.0
    durations, synths = [], []
    for index, piece in enumerate(pieces):
        started = clock()
        audio = tts._speak(piece, "eng", voice, pause if index < len(pieces) - 1 else 0.0)
        spent = clock() - started
        seconds = len(audio) / SPEECH_RATE
        calls.append((seconds - (pause if index < len(pieces) - 1 else 0.0), spent))
        made += spent
        if index == 0:
            first = playing_until = made
        elif made > playing_until:
            stall += made - playing_until
            playing_until = made
        playing_until += seconds
        durations.append(seconds)
        synths.append(spent)
    headroom = durations[0] / synths[1] if len(pieces) > 1 else None
    return first, stall, headroom, playing_until


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--sentences", type=int, default=6, help=f"at most {len(SENTENCES)}")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads; 0: all")
    parser.add_argument("--voice", default="af_heart")
    parser.add_argument("--clock", choices=CLOCKS, default="wall")
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1: other threads' work is not on its clock")

    assets = fetch_test_assets(Path(__file__).resolve().parents[1] / ".assets")
    tts = KokoroTTS(KokoroSettings(assets.kokoro_model, assets.kokoro_voices,
                                   threads=args.threads))
    try:
        tts.synthesize("Warm up, please.", "eng", args.voice)
        print(f"load average before: {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})")
        outcomes = {policy.name: Outcome() for policy in POLICIES}
        calls: list[tuple[float, float]] = []
        ratios: dict[str, list[float]] = {policy.name: [] for policy in POLICIES}
        turn = 0
        for _ in range(args.rounds):
            for sentence in SENTENCES[: args.sentences]:
                firsts: dict[str, float] = {}
                for k in range(len(POLICIES)):
                    policy = POLICIES[(turn + k) % len(POLICIES)]
                    pieces = policy.pieces(tts, sentence, args.voice)
                    first, stall, headroom, done = play(
                        tts, pieces, args.voice, calls, CLOCKS[args.clock]
                    )
                    out = outcomes[policy.name]
                    out.first.append(first)
                    out.first_chars.append(len(pieces[0]))
                    out.pieces.append(len(pieces))
                    out.stall.append(stall)
                    out.done.append(done)
                    if headroom is not None:
                        out.headroom.append(headroom)
                    firsts[policy.name] = first
                turn += 1
                for name, first in firsts.items():
                    ratios[name].append(first / firsts[OLD])
        load_after = os.getloadavg()[0]
    finally:
        tts.close()

    print(f"\n{len(SENTENCES[: args.sentences])} sentences x {args.rounds} round(s), "
          f"Kokoro threads={args.threads or 'all'}, voice {args.voice}, {args.clock} clock")
    header = (f"{'policy':<20} {'first p50':>9} {'p95':>6} {'xold':>5} {'chars':>5} "
              f"{'pieces':>6} {'stall p50':>9} {'max':>5} {'stalled':>7} "
              f"{'1st dur/2nd synth':>17} {'done p50':>8}")
    print(header)
    print("-" * len(header))
    for policy in POLICIES:
        out = outcomes[policy.name]
        stalled = sum(s > 0.02 for s in out.stall)
        ready = f"{np.median(out.headroom):.2f}" if out.headroom else "-"
        print(f"{policy.name:<20} {np.percentile(out.first, 50):9.2f} "
              f"{np.percentile(out.first, 95):6.2f} {np.median(ratios[policy.name]):5.2f} "
              f"{np.mean(out.first_chars):5.0f} {np.mean(out.pieces):6.1f} "
              f"{np.percentile(out.stall, 50):9.2f} {max(out.stall):5.2f} "
              f"{stalled:>3}/{len(out.stall):<3} {ready:>17} "
              f"{np.percentile(out.done, 50):8.2f}")

    audio, spent = np.array(calls).T
    rate, fixed = np.polyfit(audio, spent, 1)
    short = spent[audio < 1.5]
    long = spent[audio >= 3.0]
    print(f"\nKokoro cost model over {len(calls)} calls: time = {fixed:.2f} s + "
          f"{rate:.2f} x audio seconds (correlation {np.corrcoef(audio, spent)[0, 1]:.2f})")
    print(f"  calls under 1.5 s of audio: median {np.median(short):.2f} s ({len(short)} calls); "
          f"3 s and over: median {np.median(long) if len(long) else math.nan:.2f} s "
          f"({len(long)} calls)")
    print(f"load average after: {load_after:.2f}")


if __name__ == "__main__":
    main()
