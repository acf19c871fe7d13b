"""Voiceprints: a fixed-size embedding per utterance from a pyannote speaker model."""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ai.torch_compat import ensure_torchaudio
from ai.utterance import PIPELINE_RATE, Audio

# pyannote reports model use to its vendor unless told not to; a self-hosted
# server keeps its users' activity to itself. An operator may still opt in.
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
ensure_torchaudio()

import torch  # noqa: E402

with warnings.catch_warnings():
    # Its audio decoder is never used: we hand it waveforms already in memory.
    warnings.filterwarnings("ignore", message=r"\s*torchcodec is not installed correctly")
    from pyannote.audio import Inference, Model

DEFAULT_SPEAKER_MODEL = "pyannote/wespeaker-voxceleb-resnet34-LM"
MIN_SECONDS = 0.1
"""Shorter audio has too few filterbank frames for the network."""


class PyannoteEmbedder:
    """A `SpeakerEmbedder` over a pyannote embedding model (a hub id or a local folder).

    `embed` blocks (~0.1 s per 3 s of speech on two cores); from the event
    loop call `embed_async`, which runs it on this embedder's own thread, one
    utterance at a time, so a burst of rooms cannot pile up torch threads.
    Callers bound how many utterances they hand it.
    """

    def __init__(self, model: str | Path = DEFAULT_SPEAKER_MODEL, device: str = "cpu") -> None:
        loaded = Model.from_pretrained(str(model))
        if loaded is None:
            raise FileNotFoundError(f"no pyannote model at {model}")
        self._inference = Inference(loaded, window="whole", device=torch.device(device))
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voiceprint")
        self.dimension = int(self.embed(np.zeros(PIPELINE_RATE, np.float32)).shape[0])

    def embed(self, audio: Audio) -> npt.NDArray[np.float32]:
        """Blocking: the voiceprint of 16 kHz mono speech."""
        if audio.ndim != 1:
            raise ValueError(f"expected mono 16 kHz audio, got shape {audio.shape}")
        if len(audio) < MIN_SECONDS * PIPELINE_RATE:
            raise ValueError(f"{len(audio) / PIPELINE_RATE:.3f} s is too short for a voiceprint")
        waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
        with self._lock, torch.inference_mode():
            embedding = self._inference({"waveform": waveform, "sample_rate": PIPELINE_RATE})
        return np.asarray(embedding, dtype=np.float32).reshape(-1)

    async def embed_async(self, audio: Audio) -> npt.NDArray[np.float32]:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.embed, audio)

    def close(self, wait: bool = True) -> None:
        """Drops embeddings not yet started; with `wait`, blocks until the running one ended."""
        self._executor.shutdown(wait=wait, cancel_futures=True)
