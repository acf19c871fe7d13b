"""Compare echo cancellers on a simulated table: how much echo of a neighbour's
loudspeaker they remove, whether a talker speaking over it survives, and their CPU.

    .venv/bin/python -m bench.echo_cancellers
    .venv/bin/python -m bench.echo_cancellers --lead   # AEC3 with the reference early

Phone p0's microphone hears phone p1's loudspeaker (1.2 m away in a 6 x 4 x 3 m room,
RT60 0.4 s) play 14 s of speech; from 14 s on, p0's owner talks over it (double talk).
Each canceller gets the played audio lined up a few ms ahead of its echo, as the product
lines it up after measuring the lag by correlation. Figures:

- ERLE: echo return loss enhancement over the echo-only part after the first 4 s, dB.
- echo VAD: utterances the project's VAD finds in the echo-only output (want 0).
- near kept: near-end speech to (residual echo + distortion) in the output during double
  talk, dB; higher is better, and the talker alone gives about +10 to +15 here.
- DT VAD: utterances found in the double-talk part, against the talker alone.
- CPU: % of one core per microphone and loudspeaker pair.

`speexdsp` (PyPI, 2018) needs `apt-get install libspeexdsp-dev swig` before
`pip install speexdsp`; it is only compared here, not used by the product.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import numpy as np

from ai.vad import segment
from media.echo_cancellers import Canceller, WebRtcCanceller, from_int16, to_int16
from media.frames import Pcm
from media.timeline import FRAME, RATE
from tests.acoustic_room import table_of
from tests.fixtures.speech import compose

ECHO_ONLY_S = 14.0


class SpeexCanceller:
    def __init__(self, filter_ms: int) -> None:
        from speexdsp import EchoCanceller

        self._ec = EchoCanceller.create(FRAME, filter_ms * RATE // 1000, RATE)

    def process(self, mic: Pcm, reference: Pcm) -> Pcm:
        return from_int16(self._ec.process(to_int16(mic), to_int16(reference)))


def scene() -> tuple[Pcm, Pcm, Pcm, Pcm]:
    """(mic, played, echo component, near component) at 16 kHz, on one clock: the
    played audio leads its echo by the acoustic path alone."""
    played = compose([
        0.3, "Buenos días a todos, hoy vamos a hablar del proyecto nuevo.", 0.4,
        "La reunión empieza en cinco minutos, gracias por venir.", 0.3,
        "Por favor, apaguen los teléfonos móviles durante la presentación.", 0.4,
        "Después hablaremos del presupuesto para el año que viene.", 0.3,
        "Hay café en la sala de al lado para todos.", 0.3,
        "Ahora veremos las cifras del primer trimestre.", 0.3,
        "Y luego las preguntas de todos ustedes.", 0.3,
    ], voice="es", level=0.4).audio
    near = compose([ECHO_ONLY_S + 0.5, "The quick brown fox jumps over the lazy dog.", 0.6,
                    "Please write down the numbers on the board.", 0.5],
                   level=0.4).audio
    length = max(len(played), len(near))
    played = np.pad(played, (0, length - len(played)))
    near = np.pad(near, (0, length - len(near)))
    room = table_of(3)
    full = room.render({"p0": near}, {"p1": played})
    noise = room.render({}, {"p1": np.zeros(length, np.float32)})["p0"]
    echo = room.render({}, {"p1": played})["p0"] - noise
    near_part = room.render({"p0": near})["p0"] - noise
    return full["p0"], played, echo, near_part


def run(canceller: Canceller, mic: Pcm, played: Pcm) -> tuple[Pcm, float]:
    played = np.pad(played, (0, max(len(mic) - len(played), 0)))
    out = np.zeros_like(mic)
    spent = 0.0
    for start in range(0, len(mic) - FRAME + 1, FRAME):
        ref = played[start : start + FRAME]
        began = time.process_time()
        out[start : start + FRAME] = canceller.process(mic[start : start + FRAME], ref)
        spent += time.process_time() - began
    return out, spent / (len(mic) / RATE)


def db(x: Pcm) -> float:
    return 10 * float(np.log10(np.mean(np.square(x, dtype=np.float64)) + 1e-20))


def lead_table(mic: Pcm, played: Pcm) -> None:
    """AEC3 with its reference further and further ahead of the echo: ERLE per 2 s."""
    split = int(ECHO_ONLY_S * RATE)
    print("AEC3, reference ahead of echo by: ERLE dB in each 2 s of echo, echo VAD")
    for lead_ms in (0, 100, 200, 300, 400, 500):
        ahead = lead_ms * RATE // 1000
        reference = np.concatenate([played[ahead:], np.zeros(ahead, np.float32)])
        out, _ = run(WebRtcCanceller(), mic, reference)
        erle = [db(mic[s : s + 2 * RATE]) - db(out[s : s + 2 * RATE])
                for s in range(0, split, 2 * RATE)]
        print(f"{lead_ms:4d} ms  " + " ".join(f"{e:5.1f}" for e in erle)
              + f"   {len(segment(out[:split]))}")


def main() -> None:
    mic, played, echo, near = scene()
    if "--lead" in sys.argv:
        lead_table(mic, played)
        return
    split = int(ECHO_ONLY_S * RATE)
    settle = 4 * RATE
    alone = len(segment(near[split:] + (mic - echo - near)[split:]))
    cancellers: dict[str, Callable[[], Canceller]] = {"none": _Passthrough}
    cancellers["webrtc-aec3 (aec-audio-processing)"] = WebRtcCanceller
    for ms in (128, 256):
        cancellers[f"speexdsp, {ms} ms filter"] = lambda ms=ms: SpeexCanceller(ms)
    print(f"{'canceller':36} {'ERLE dB':>8} {'echo VAD':>9} {'near kept dB':>13} "
          f"{'DT VAD':>7} {'CPU %':>6}")
    for name, make in cancellers.items():
        try:
            canceller = make()
        except ImportError as error:
            print(f"{name:36} not installed ({error})")
            continue
        out, cpu = run(canceller, mic, played)
        erle = db(mic[settle:split]) - db(out[settle:split])
        echo_vad = len(segment(out[:split]))
        speaking = np.abs(near[split:]) > 0
        distortion = out[split:][speaking] - near[split:][speaking]
        kept = db(near[split:][speaking]) - db(distortion)
        dt_vad = len(segment(out[split:]))
        print(f"{name:36} {erle:8.1f} {echo_vad:9d} {kept:13.1f} {dt_vad:4d}/{alone:<2d} "
              f"{100 * cpu:6.2f}")


class _Passthrough:
    def process(self, mic: Pcm, reference: Pcm) -> Pcm:
        return mic


if __name__ == "__main__":
    main()
