"""Engine speed and memory on this machine, printed as a table.

    python -m bench.models                                  # CPU: fp32, bf16, int8
    python -m bench.models --dtypes float32,bfloat16        # skip the int8 run
    python -m bench.models --device cuda --dtypes bfloat16  # a GPU run

SeamlessM4T v2-large is built from its default config with random weights (no
download): the compute is the real model's, only the words are meaningless.
Each SeamlessM4T mode and the small engines run in their own subprocess, so
each peak RSS is that mode's alone. Timings are medians over a few runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

AUDIO_SECONDS = 3.0
DECODE_TOKENS = 20
TARGETS = 3
KOKORO_SENTENCE = (
    "The weather today is lovely, so we will walk along the river before dinner tonight."
)
MARK = "BENCH "


def _median_seconds(
    run: Callable[[], object], repeats: int, sync: Callable[[], None],
    warm_up: Callable[[], object] | None = None,
) -> float:
    (warm_up or run)()  # first calls allocate and pick kernels
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _rss_gib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def random_seamless(device_name: str, dtype_name: str) -> Any:
    """SeamlessM4T v2-large from its default config with random weights, on `device_name`,
    built straight in `dtype_name` as from_pretrained(dtype=...) loads ("int8": fp32, then
    `ai.seamless.quantize_int8`). A `SeamlessM4Tv2Model`; bench/latency.py serves it too."""
    from ai.torch_compat import ensure_torchaudio

    ensure_torchaudio()
    import torch
    from transformers import SeamlessM4Tv2Config, SeamlessM4Tv2Model

    from ai.seamless import quantize_int8

    int8 = dtype_name == "int8"
    torch.set_default_dtype(torch.float32 if int8 else getattr(torch, dtype_name))
    try:
        model = SeamlessM4Tv2Model(SeamlessM4Tv2Config()).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    if int8:
        quantize_int8(model)
    return model.to(torch.device(device_name))


def seamless_worker(device_name: str, dtype_name: str, repeats: int) -> dict[str, Any]:
    from ai.torch_compat import ensure_torchaudio

    ensure_torchaudio()
    import numpy as np
    import torch
    from transformers import (
        GenerationConfig,
        GenerationMixin,
        SeamlessM4TFeatureExtractor,
    )
    from transformers.modeling_outputs import BaseModelOutput

    device = torch.device(device_name)
    int8 = dtype_name == "int8"
    dtype = torch.float32 if int8 else getattr(torch, dtype_name)
    started = time.perf_counter()
    model = random_seamless(device_name, dtype_name)
    config = model.config
    build_s = time.perf_counter() - started
    params = sum(p.numel() for p in model.parameters())

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rng = np.random.default_rng(0)
    audio = (rng.standard_normal(int(AUDIO_SECONDS * 16_000)) * 0.1).astype(np.float32)
    features = SeamlessM4TFeatureExtractor()(
        [audio], sampling_rate=16_000, return_tensors="pt", return_attention_mask=True
    )
    input_features = features["input_features"].to(device, torch.float32 if int8 else dtype)
    mask = features["attention_mask"].to(device)
    model.generation_config = GenerationConfig.from_model_config(config)
    model.set_modality("speech")
    # Any three language tokens: the cost does not depend on which.
    languages = torch.arange(config.vocab_size - TARGETS, config.vocab_size, device=device)

    with torch.inference_mode():
        def encode() -> torch.Tensor:
            return model.speech_encoder(input_features=input_features, attention_mask=mask)[0]

        encoded = encode()

        def decode(rows: int, tokens: int = DECODE_TOKENS) -> Callable[[], object]:
            pick = torch.zeros(rows, dtype=torch.long, device=device)

            def run() -> object:
                return GenerationMixin.generate(
                    model,
                    encoder_outputs=BaseModelOutput(encoded.index_select(0, pick)),
                    attention_mask=mask.index_select(0, pick),
                    decoder_input_ids=languages[:rows, None],
                    do_sample=False, num_beams=1,
                    min_new_tokens=tokens, max_new_tokens=tokens,
                )

            return run

        encoder_s = _median_seconds(encode, repeats, sync)
        decode_1 = _median_seconds(decode(1), repeats, sync, decode(1, 2))
        decode_3 = _median_seconds(decode(TARGETS), repeats, sync, decode(TARGETS, 2))

    figures = {
        "mode": f"{device.type} {dtype_name}",
        "params_b": params / 1e9,
        "build_s": build_s,
        "encoder_ms": encoder_s * 1e3,
        "token_ms": decode_1 / DECODE_TOKENS * 1e3,
        "decode_1_s": decode_1,
        "decode_3_s": decode_3,
        "ratio_3_to_1": decode_3 / decode_1,
        "utterance_3_s": encoder_s + decode_3,
        "rss_gib": _rss_gib(),
        "peak_rss_gib": _peak_rss_gib(),
    }
    if device.type == "cuda":
        figures["gpu_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return figures


def small_engines_worker(repeats: int) -> dict[str, Any]:
    """Kokoro (registry-shipped weights), webrtcvad and a random-weight WeSpeaker ResNet34."""
    import asyncio
    import tempfile

    import numpy as np

    from ai.models import fetch_test_assets
    from ai.resample import SPEECH_RATE
    from ai.tts import KokoroSettings, KokoroTTS
    from ai.vad import VadSegmenter
    from ai.voiceprint import PyannoteEmbedder
    from tests.fixtures.pyannote import save_random_wespeaker
    from tests.fixtures.speech import compose

    assets = fetch_test_assets(Path(__file__).resolve().parent.parent / ".assets")
    tts = KokoroTTS(KokoroSettings(assets.kokoro_model, assets.kokoro_voices))
    voice = tts.default_voice("eng")
    tts.synthesize("Warm up.", "eng", voice)

    async def stream_once() -> tuple[float, float, float]:
        """(first audio, whole text, audio seconds); the stream runs to its end, so
        no sentence is left on the engine's worker to slow the next run."""
        started = time.perf_counter()
        first, samples = 0.0, 0
        async for chunk in tts.stream(KOKORO_SENTENCE, "eng", voice):
            first = first or time.perf_counter() - started
            samples += len(chunk)
        return first, time.perf_counter() - started, samples / SPEECH_RATE

    runs = [asyncio.run(stream_once()) for _ in range(repeats)]
    first_audio = statistics.median(run[0] for run in runs)
    seconds = runs[0][2]
    whole = statistics.median(run[1] for run in runs)
    tts.close()

    speech = compose([0.5, "The quick brown fox jumps over the lazy dog.", 1.0,
                      "Where is the train station?", 0.5], rate=16_000).audio
    segmenter = VadSegmenter()
    frame = segmenter.frame_samples
    frames = len(speech) // frame

    def run_vad() -> None:
        for i in range(frames):
            segmenter.push(speech[i * frame : (i + 1) * frame], i * frame / 16_000)
        segmenter.flush()

    vad_s = _median_seconds(run_vad, repeats, lambda: None)

    with tempfile.TemporaryDirectory() as folder:
        embedder = PyannoteEmbedder(save_random_wespeaker(Path(folder)))
    clip = (np.random.default_rng(0).standard_normal(48_000) * 0.1).astype(np.float32)
    embed_s = _median_seconds(lambda: embedder.embed(clip), repeats, lambda: None)
    embedder.close()
    return {
        "kokoro_words": len(KOKORO_SENTENCE.split()),
        "kokoro_audio_s": seconds,
        "kokoro_rtf": whole / seconds,
        "kokoro_first_audio_s": first_audio,
        "vad_us_per_frame": vad_s / frames * 1e6,
        "embed_ms_per_3s": embed_s * 1e3,
        "peak_rss_gib": _peak_rss_gib(),
    }


def _small_table(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"small engines | failed: {row['error']}"
    return "\n".join([
        "engine | figure",
        f"Kokoro int8, {row['kokoro_words']} words ({row['kokoro_audio_s']:.1f} s of audio) | "
        f"RTF {row['kokoro_rtf']:.2f}, first audio after {row['kokoro_first_audio_s']:.2f} s",
        f"webrtcvad + noise gate | {row['vad_us_per_frame']:.0f} µs per 20 ms frame",
        f"WeSpeaker ResNet34 (random weights) | {row['embed_ms_per_3s']:.0f} ms per 3 s",
        f"peak RSS of these three | {row['peak_rss_gib']:.1f} GiB",
    ])


WORKERS: dict[str, Callable[..., dict[str, Any]]] = {
    "seamless": seamless_worker,
    "small": small_engines_worker,
}


def _spawn(args: list[str]) -> dict[str, Any]:
    """Runs one worker in a fresh interpreter; its figures or the error it hit."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.models", "--worker", *args],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
    )
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            return dict(json.loads(line[len(MARK):]))
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"mode": " ".join(args), "error": " | ".join(tail) or f"exit {done.returncode}"}


def _seamless_table(rows: list[dict[str, Any]]) -> str:
    columns = [
        ("mode", "mode", "{}"), ("build_s", "build s", "{:.1f}"),
        ("encoder_ms", "encoder 3 s ms", "{:.0f}"), ("token_ms", "ms/token", "{:.1f}"),
        ("decode_1_s", "decode 1×20 s", "{:.2f}"), ("decode_3_s", "decode 3×20 s", "{:.2f}"),
        ("ratio_3_to_1", "3 langs / 1", "{:.2f}×"), ("utterance_3_s", "enc+3 langs s", "{:.2f}"),
        ("rss_gib", "RSS GiB", "{:.1f}"), ("peak_rss_gib", "peak RSS GiB", "{:.1f}"),
    ]
    lines = [" | ".join(title for _, title, _ in columns)]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['mode']} | failed: {row['error']}")
            continue
        lines.append(" | ".join(form.format(row[key]) for key, _, form in columns))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", default=None,
                        help="comma list of float32, bfloat16, float16, int8 "
                             "(default: float32,bfloat16,int8 on CPU; bfloat16 on CUDA)")
    parser.add_argument("--dtype", dest="dtypes", help="alias of --dtypes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker")
    parser.add_argument("--skip-seamless", action="store_true")
    parser.add_argument("--skip-small", action="store_true")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker:
        kind, *rest = args.worker
        figures = WORKERS[kind](*rest, repeats=args.repeats)
        print(MARK + json.dumps(figures), flush=True)
        return

    threads = ["--threads", str(args.threads)] if args.threads else []
    repeats = ["--repeats", str(args.repeats)]
    if not args.skip_seamless:
        default = "bfloat16" if args.device.startswith("cuda") else "float32,bfloat16,int8"
        rows = [
            _spawn(["seamless", args.device, dtype, *repeats, *threads])
            for dtype in (args.dtypes or default).split(",")
        ]
        print(f"SeamlessM4T v2-large, random weights, {AUDIO_SECONDS:g} s audio, "
              f"{DECODE_TOKENS} tokens decoded, {TARGETS} target languages batched")
        print(_seamless_table(rows))
    if not args.skip_small:
        print()
        print(_small_table(_spawn(["small", *repeats, *threads])))


if __name__ == "__main__":
    main()
