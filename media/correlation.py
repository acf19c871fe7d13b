"""Generalised cross-correlation with phase transform (GCC-PHAT): at which lag two
signals carry the same sound, and how clearly.

PHAT whitens the cross-spectrum, so the peak is sharp even in a reverberant room and does
not depend on how loud either signal is. Only the speech band counts: below it lives hum
and table thumps, above it little speech energy. Signals are analysed at 4 kHz, which is
a quarter of the work of 16 kHz and still places a lag to a quarter of a millisecond.

Each stream's spectra are computed once per analysis and shared by all of its pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import fft as sfft
from scipy.signal import resample_poly

from media.frames import Pcm
from media.timeline import RATE

DECIMATION = 4
ANALYSIS_RATE = RATE // DECIMATION
BAND_HZ = (200.0, 1_900.0)

Spectrum = npt.NDArray[np.complex128]


@dataclass(frozen=True, slots=True)
class Match:
    lag: int
    """In 16 kHz samples: `late` carries the sound this much after `early` (negative:
    before)."""
    clarity: float
    """The correlation peak over the spread of all other lags: about 4-7 for unrelated
    signals, tens for two microphones hearing one talker."""


class Window:
    """One stream's analysis window, widened by `max_lag` on each side.

    `early` is the spectrum of the centre (the span compared), `late` of the whole widened
    window (where a partner's centre is looked for).
    """

    def __init__(self, widened: Pcm, max_lag: int) -> None:
        samples = resample_poly(widened, 1, DECIMATION).astype(np.float32)
        self.max_lag = max_lag // DECIMATION
        centre = samples[self.max_lag : len(samples) - self.max_lag]
        self.size = sfft.next_fast_len(len(samples) + len(centre), real=True)
        self.early: Spectrum = np.conj(sfft.rfft(centre, self.size))
        self.late: Spectrum = sfft.rfft(samples, self.size)


PEAK_SEPARATION = ANALYSIS_RATE * 10 // 1000
"""Two copies of one sound count as two peaks when at least 10 ms apart."""


def match(early: Window, late: Window) -> Match:
    """Where `early`'s centre best matches inside `late`'s widened window."""
    return matches(early, late, 1)[0]


def matches(early: Window, late: Window, count: int) -> list[Match]:
    """The `count` best places, loudest first, at least `PEAK_SEPARATION` apart: where
    several copies of one sound reach `late`, such as one translation played by several
    phones at once."""
    if early.size != late.size or early.max_lag != late.max_lag:
        raise ValueError("windows of different shapes")
    spectrum = early.early * late.late
    freqs = np.arange(len(spectrum)) * ANALYSIS_RATE / early.size
    band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
    magnitude = np.abs(spectrum)
    weights = np.where(band & (magnitude > 1e-20), 1.0 / np.maximum(magnitude, 1e-20), 0.0)
    scores = sfft.irfft(spectrum * weights, early.size)[: 2 * early.max_lag + 1]
    spread = float(np.std(scores)) or 1.0
    found = []
    for _ in range(count):
        peak = int(np.argmax(scores))
        found.append(Match((peak - early.max_lag) * DECIMATION, float(scores[peak]) / spread))
        scores[max(peak - PEAK_SEPARATION, 0) : peak + PEAK_SEPARATION + 1] = -np.inf
    return found


def likeness(heard: Pcm, played: Pcm) -> float:
    """How much of `heard` is `played` at one lag: the largest normalised correlation of
    `heard` with a same-length stretch of `played` (which is longer by the lags to try),
    from 0 (nothing in common) to 1 (`heard` is a scaled copy). Unlike GCC-PHAT clarity,
    this weighs by energy: a talker over a faint residual echo scores low."""
    heard, played = _coarse(heard), _coarse(played)
    count = len(heard)
    energy = float(np.dot(heard, heard))
    if energy < 1e-12 or len(played) < count:
        return 0.0
    size = sfft.next_fast_len(len(played) + count, real=True)
    products = sfft.irfft(sfft.rfft(played, size) * np.conj(sfft.rfft(heard, size)), size)
    products = products[: len(played) - count + 1]
    sums = np.concatenate(([0.0], np.cumsum(np.square(played, dtype=np.float64))))
    played_energy = np.maximum(sums[count:] - sums[:-count], 1e-12)
    return float(np.max(np.abs(products) / np.sqrt(energy * played_energy)))


def _coarse(samples: Pcm) -> Pcm:
    """4 kHz by averaging each run of four samples: a crude low-pass, but the same for
    both signals compared, and a quarter of the work."""
    usable = len(samples) // DECIMATION * DECIMATION
    return samples[:usable].reshape(-1, DECIMATION).mean(axis=1)
