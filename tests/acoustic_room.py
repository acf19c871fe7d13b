"""A simulated room with several phones on a table, for co-location tests and benches.

Built on pyroomacoustics' image-source model: a 6 x 4 x 3 m shoebox with RT60 about
0.4 s at 16 kHz. Phones have a microphone and a loudspeaker; talkers stand anywhere.
Every talker and every loudspeaker reaches every microphone through its own room impulse
response, except a phone's own loudspeaker, which the browser's echo canceller removes.
Each microphone adds its own independent noise floor.

`RoomStream.block` convolves 20 ms blocks with state carried across calls (what a live
test feeds its aiortc clients); `AcousticRoom.render` does whole signals at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyroomacoustics as pra
from scipy import fft as sfft

Signal = npt.NDArray[np.float32]
Point = tuple[float, float, float]

RATE = 16_000
BLOCK = RATE // 50
"""Samples in one 20 ms block."""

REFERENCE_DISTANCE = 0.5
"""A source this far from a microphone arrives at about the level it was emitted at."""

RIR_SECONDS = 0.5
"""Impulse responses are cut here: by then an RT60 0.4 s room has decayed by over 60 dB."""


@dataclass(frozen=True)
class Phone:
    name: str
    mic: Point
    speaker: Point


@dataclass(frozen=True)
class Talker:
    name: str
    position: Point


@dataclass
class AcousticRoom:
    """Phones and talkers in one shoebox; impulse responses are computed on first use."""

    size: Point = (6.0, 4.0, 3.0)
    rt60: float = 0.4
    noise_dbfs: float = -65.0
    """RMS of each microphone's own noise, in dB relative to full scale."""
    seed: int = 0
    phones: dict[str, Phone] = field(default_factory=dict)
    talkers: dict[str, Talker] = field(default_factory=dict)
    _rirs: dict[tuple[str, str], Signal] | None = field(default=None, repr=False)

    def add_phone(self, name: str, mic: Point, speaker: Point | None = None) -> Phone:
        """A phone on the table; its loudspeaker defaults to 10 cm from its microphone."""
        if name in self.phones:
            raise ValueError(f"phone {name} is already in the room")
        phone = Phone(name, mic, speaker or (mic[0] + 0.1, mic[1], mic[2]))
        self.phones[name] = phone
        self._rirs = None
        return phone

    def add_talker(self, name: str, at: Point) -> Talker:
        if name in self.talkers:
            raise ValueError(f"talker {name} is already in the room")
        talker = Talker(name, at)
        self.talkers[name] = talker
        self._rirs = None
        return talker

    @property
    def sources(self) -> list[str]:
        """Source names: "talker:NAME" for people, "speaker:NAME" for loudspeakers."""
        return [f"talker:{t}" for t in self.talkers] + [f"speaker:{p}" for p in self.phones]

    def rir(self, source: str, phone: str) -> Signal:
        """The impulse response from `source` to `phone`'s microphone (zeros for its own
        loudspeaker), scaled so that a source `REFERENCE_DISTANCE` away keeps its level."""
        return self._impulse_responses()[(source, phone)]

    def stream(self) -> RoomStream:
        return RoomStream(self)

    def render(
        self, talkers: Mapping[str, Signal], speakers: Mapping[str, Signal] | None = None
    ) -> dict[str, Signal]:
        """Every phone's microphone signal for whole talker and loudspeaker signals.

        Signals may differ in length; the result is as long as the longest, padded to
        whole blocks. Uses the streaming convolver, so it matches a live run sample for
        sample.
        """
        speakers = speakers or {}
        lengths = [len(s) for s in (*talkers.values(), *speakers.values())]
        blocks = -(-max(lengths, default=0) // BLOCK)
        stream = self.stream()
        out: dict[str, list[Signal]] = {p: [] for p in self.phones}
        for b in range(blocks):
            window = slice(b * BLOCK, (b + 1) * BLOCK)
            mics = stream.block(
                {n: _block_of(s, window) for n, s in talkers.items()},
                {n: _block_of(s, window) for n, s in speakers.items()},
            )
            for phone, samples in mics.items():
                out[phone].append(samples)
        return {p: np.concatenate(parts) if parts else np.zeros(0, np.float32)
                for p, parts in out.items()}

    def _impulse_responses(self) -> dict[tuple[str, str], Signal]:
        if self._rirs is not None:
            return self._rirs
        if not self.phones:
            raise ValueError("the room has no phones")
        absorption, max_order = pra.inverse_sabine(self.rt60, list(self.size))
        room = pra.ShoeBox(
            list(self.size), fs=RATE, materials=pra.Material(absorption),
            max_order=min(max_order, 12),
        )
        positions = [t.position for t in self.talkers.values()]
        positions += [p.speaker for p in self.phones.values()]
        for position in positions:
            room.add_source(list(position))
        mics = np.array([p.mic for p in self.phones.values()]).T
        room.add_microphone_array(mics)
        room.compute_rir()
        # pyroomacoustics' responses fall off as 1/r (no 4π), so this makes r = 0.5 m unity.
        gain = REFERENCE_DISTANCE
        taps = int(RIR_SECONDS * RATE)
        rirs: dict[tuple[str, str], Signal] = {}
        for m, phone in enumerate(self.phones):
            for s, source in enumerate(self.sources):
                h = np.zeros(taps, np.float32)
                if source != f"speaker:{phone}":
                    response = np.asarray(room.rir[m][s][:taps], np.float32) * gain
                    h[: len(response)] = response
                rirs[(source, phone)] = h
        self._rirs = rirs
        return rirs


class RoomStream:
    """Convolves the room 20 ms at a time, carrying each reverberation tail forward.

    Per block: one FFT per sounding source, one inverse FFT per microphone.
    """

    def __init__(self, room: AcousticRoom) -> None:
        self.room = room
        rirs = room._impulse_responses()
        self._phones = list(room.phones)
        self._sources = room.sources
        taps = len(next(iter(rirs.values())))
        self._nfft = sfft.next_fast_len(BLOCK + taps - 1, real=True)
        self._spectra = np.stack([
            np.stack([sfft.rfft(rirs[(s, p)], self._nfft) for p in self._phones])
            for s in self._sources
        ])  # (source, mic, bin)
        self._gains = np.ones((len(self._sources), len(self._phones)), np.float32)
        self._tails = np.zeros((len(self._phones), self._nfft), np.float64)
        self._noise = np.random.default_rng(room.seed)
        self._noise_rms = 10 ** (room.noise_dbfs / 20)
        self._away: dict[str, str | None] = {}

    def leave(self, phone: str, carrying: str | None = None) -> None:
        """`phone` leaves the table: its microphone stops hearing the room, and the room
        stops hearing its loudspeaker. Its owner `carrying` (a talker) goes too: still
        heard by that phone, no longer by the others."""
        self._away[phone] = carrying
        self._update_gains()

    def rejoin(self, phone: str) -> None:
        self._away.pop(phone, None)
        self._update_gains()

    def block(
        self, talkers: Mapping[str, Signal], speakers: Mapping[str, Signal] | None = None
    ) -> dict[str, Signal]:
        """Each phone's microphone for this block, from each talker's and loudspeaker's
        `BLOCK` samples (missing ones are silent)."""
        speakers = speakers or {}
        for name in talkers:
            if name not in self.room.talkers:
                raise KeyError(f"no talker {name} in the room")
        for name in speakers:
            if name not in self.room.phones:
                raise KeyError(f"no phone {name} in the room")
        mix = np.zeros((len(self._phones), self._nfft // 2 + 1), np.complex128)
        for s, source in enumerate(self._sources):
            kind, name = source.split(":", 1)
            samples = (talkers if kind == "talker" else speakers).get(name)
            if samples is None or not np.any(samples):
                continue
            if len(samples) != BLOCK:
                raise ValueError(f"{source}: expected {BLOCK} samples, got {len(samples)}")
            spectrum = sfft.rfft(samples, self._nfft)
            mix += spectrum[None, :] * self._spectra[s] * self._gains[s][:, None]
        self._tails += sfft.irfft(mix, self._nfft, axis=1)
        out = self._tails[:, :BLOCK].copy()
        self._tails = np.roll(self._tails, -BLOCK, axis=1)
        self._tails[:, -BLOCK:] = 0.0
        out += self._noise.normal(0.0, self._noise_rms, out.shape)
        return {p: out[m].astype(np.float32) for m, p in enumerate(self._phones)}

    def _update_gains(self) -> None:
        self._gains[:] = 1.0
        for phone, carried in self._away.items():
            mic = self._phones.index(phone)
            for s, source in enumerate(self._sources):
                if source == f"talker:{carried}":
                    self._gains[s, :] = 0.0
                    self._gains[s, mic] = 1.0
                elif source == f"speaker:{phone}":
                    self._gains[s, :] = 0.0
                else:
                    self._gains[s, mic] = 0.0


def _block_of(signal: Signal, window: slice) -> Signal:
    part = np.asarray(signal[window], np.float32)
    if len(part) < BLOCK:
        part = np.concatenate([part, np.zeros(BLOCK - len(part), np.float32)])
    return part


def table_of(count: int, *, prefix: str = "p", seed: int = 0) -> AcousticRoom:
    """`count` phones along the long sides of a table in the middle of the room, each with
    its owner's mouth about 45 cm from it; talker and phone share a name ("p0", "p1", ...).

    A remote participant is a phone in another `AcousticRoom` (another `seed` and
    `prefix`): nothing of one room reaches the other's microphones.
    """
    room = AcousticRoom(seed=seed)
    for i, (x, y, side) in enumerate(_seats(count)):
        name = f"{prefix}{i}"
        room.add_phone(name, (x, y, 0.75))
        room.add_talker(name, (x, y + 0.35 * side, 1.05))
    return room


def _seats(count: int) -> list[tuple[float, float, int]]:
    """Places along the two long sides of the table, ends first, alternating sides."""
    per_side = -(-count // 2)
    xs = np.linspace(1.9, 4.1, max(per_side, 2)) if per_side > 1 else np.array([3.0])
    seats = []
    for i in range(count):
        side = 1 if i % 2 == 0 else -1
        x = float(xs[i // 2] if i % 2 == 0 else xs[::-1][i // 2])
        seats.append((x, 2.0 + 0.5 * side, side))
    return seats
