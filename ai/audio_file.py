"""Any audio file PyAV can read, as 16 kHz mono float32 for the engines."""

from __future__ import annotations

import io

import av
import numpy as np

from ai.utterance import PIPELINE_RATE, Audio

MAX_FILE_SECONDS = 3600.0
"""Decoding stops past this: a small compressed upload must not expand without end."""


class UndecodableAudio(ValueError):
    """The bytes are not audio PyAV can decode; the message says why."""


def decode_audio(
    data: bytes, rate: int = PIPELINE_RATE, max_seconds: float = MAX_FILE_SECONDS
) -> Audio:
    """Decodes the first audio stream, downmixed to mono and resampled to `rate`.

    Blocking and CPU-bound: run it off the event loop.
    """
    if not data:
        raise UndecodableAudio("the file is empty")
    chunks: list[np.ndarray] = []
    decoded = 0
    limit = int(max_seconds * rate)
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise UndecodableAudio("the file holds no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
                    decoded += out.samples
                if decoded > limit:
                    raise UndecodableAudio(f"audio longer than {max_seconds:g} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as error:
        raise UndecodableAudio(f"not a readable audio file ({error})") from error
    if not chunks:
        raise UndecodableAudio("the audio stream holds no samples")
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    if not np.all(np.isfinite(samples)):
        raise UndecodableAudio("the audio holds NaN or infinite samples")
    return np.clip(samples, -1.0, 1.0)
