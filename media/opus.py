"""Opus encoding of mixed 48 kHz mono frames, one encoder per distinct mix."""

from __future__ import annotations

import av
import numpy as np

from media.frames import FRAME_SAMPLES, MIX_RATE, Pcm

OPUS_BITRATE = 32_000
"""Mono speech (originals and synthesized translations) is transparent enough at 32 kb/s."""


class OpusEncoder:
    """A libopus encoder fed exactly one 20 ms frame per call, returning one packet.

    Not thread-safe: the mixer only uses it from one executor job at a time.
    """

    def __init__(self, bitrate: int = OPUS_BITRATE) -> None:
        self._codec = av.CodecContext.create("libopus", "w")
        self._codec.sample_rate = MIX_RATE
        self._codec.layout = "mono"
        self._codec.format = "s16"
        self._codec.bit_rate = bitrate
        self._codec.options = {"application": "voip"}
        self._codec.open()
        self._pts = 0

    def encode(self, pcm: Pcm) -> bytes:
        """Bytes of one Opus packet for FRAME_SAMPLES samples in [-1, 1]."""
        if len(pcm) != FRAME_SAMPLES:
            raise ValueError(f"expected {FRAME_SAMPLES} samples, got {len(pcm)}")
        samples = np.clip(pcm * 32767.0, -32768, 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples[np.newaxis, :], format="s16", layout="mono")
        frame.sample_rate = MIX_RATE
        frame.pts = self._pts
        self._pts += FRAME_SAMPLES
        packets = self._codec.encode(frame)
        # libopus answers every 20 ms frame with exactly one packet, without lookahead queueing.
        return b"".join(bytes(packet) for packet in packets)


def silence_packet() -> bytes:
    """An Opus packet that decodes to 20 ms of silence, so quiet mixes cost no encoding."""
    encoder = OpusEncoder()
    quiet = np.zeros(FRAME_SAMPLES, np.float32)
    # Past the encoder's start-up frames, a packet of digital silence is self-contained.
    for _ in range(3):
        packet = encoder.encode(quiet)
    return packet
