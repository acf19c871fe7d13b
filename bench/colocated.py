"""One table, many phones: the simulated room through AcousticTables and the real VAD.

    .venv/bin/python -m bench.colocated            # 3 and 6 phones
    .venv/bin/python -m bench.colocated --phones 3

Phones sit along a table in a 6 x 4 x 3 m room (RT60 0.4 s), each with its owner, with
uplinks of 40-160 ms and playout delays of 100-200 ms. One warm-up sentence lets the
table group. Then every owner speaks one sentence in turn, for two rounds (`--rounds`);
1 s after each sentence, the
server sends every other phone a translation (Spanish or French, espeak-ng), which its
loudspeaker plays into the room; the next owner starts 0.5 s after that playback ends
(turn-taking), or, in the second set of columns, halfway through it (talking over the
neighbours' loudspeakers). Last, the two owners at opposite ends speak at once.

Figures (targets 0 / 0 / 0 / 0 and at most 5 % of one core per participant):
- duplicate utterances per sentence: utterances from other phones than the talker's;
- wrongly credited sentences: no utterance from the talker's own phone;
- talker's sentence split: extra utterances the VAD cut a talker's own sentence into;
- speech heard: the share of each sentence's time that the talker's own phone passed to
  the VAD inside an utterance, mean and worst, in the first round of turns (while the
  table's echo paths are still being measured) and in the later rounds; the rest was
  muted or gated, which is what talking over a loudspeaker costs;
- re-translations of playback: utterances overlapping no sentence (only playback);
- overlapping talkers missed: of the two simultaneous sentences, those not heard on the
  talker's phone;
- CPU: process time inside AcousticTables (grouping, echo cancellation, automix) over
  audio time, per participant, on this machine's loaded cores.
"""

from __future__ import annotations

import argparse

import numpy as np

from tests.acoustic_room import RATE, table_of
from tests.fixtures.speech import compose
from tests.table_sim import Heard, Link, TableSim

SENTENCES = [
    "Good morning everyone, let us begin the meeting now.",
    "Thank you, I have the numbers for the first quarter.",
    "We will meet again after the lunch break.",
    "The quick brown fox jumps over the lazy dog.",
    "Please write the numbers on the board today.",
    "I think the budget will be much larger this year.",
    "Could you send me the slides after the call?",
]
TRANSLATIONS = {
    "es": "Gracias, tengo las cifras del primer trimestre aquí mismo.",
    "fr": "Merci, nous nous reverrons après la pause du déjeuner.",
}
PIPELINE_DELAY = 1.0


def run(
    phones: int, over_playback: bool, rounds: int = 2, verbose: bool = False
) -> dict[str, float | str]:
    room = table_of(phones)
    names = list(room.phones)
    links = {p: Link(uplink=2 + (3 * i) % 7, playout=5 + (2 * i) % 6,
                     stream_offset=10.0 * i) for i, p in enumerate(names)}
    languages = {p: ("es", "fr")[i % 2] for i, p in enumerate(names)}
    translation = {lang: compose([text], voice=lang, level=0.4).audio
                   for lang, text in TRANSLATIONS.items()}
    sentences: list[tuple[str, float, float]] = []
    talkers: dict[str, list[tuple[float, np.ndarray]]] = {p: [] for p in names}
    played: dict[str, list[tuple[float, np.ndarray]]] = {p: [] for p in names}

    def say(who: str, at: float, text: str) -> float:
        audio = compose([text], level=0.4).audio
        talkers[who].append((at, audio))
        end = at + len(audio) / RATE
        sentences.append((who, at, end))
        return end

    warm_end = say(names[0], 0.5, SENTENCES[0])
    t = warm_end + 1.5
    for turn, who in enumerate(names * rounds):
        end = say(who, t, SENTENCES[(turn + 1) % len(SENTENCES)])
        sent_at = end + PIPELINE_DELAY
        longest = 0.0
        for listener in names:
            if listener != who:
                clip = translation[languages[listener]]
                played[listener].append((sent_at, clip))
                longest = max(longest, len(clip) / RATE)
        t = sent_at + (longest / 2 if over_playback else longest + 0.5)
    t += 3.0
    far = max(names[1:], key=lambda p: np.hypot(
        *np.subtract(room.phones[p].mic[:2], room.phones[names[0]].mic[:2])))
    overlap = [say(names[0], t, SENTENCES[4]), say(far, t + 0.1, SENTENCES[5])]
    total = max(overlap) + 2.0

    sim = TableSim([room], links=links)
    sim.run({p: _lay(parts, total) for p, parts in talkers.items()},
            {p: _lay(parts, total) for p, parts in played.items()}, seconds=total)
    sim.finish()

    if verbose:
        for who, start, end in sentences:
            print(f"said  {who} {start:6.2f}-{end:6.2f}")
        for pid, parts in played.items():
            for at, audio in parts:
                print(f"sent  {pid} {at:6.2f}-{at + len(audio) / RATE:6.2f}")
        for h in sim.heard:
            print(f"heard {h.pid} {h.start:6.2f}-{h.end:6.2f}")
    scored = sentences[1:]
    duplicates = wrong = missed = splits = 0
    coverage = []
    for k, (who, start, end) in enumerate(scored):
        found = _covering(sim.heard, start, end)
        own = [h for h in found if h.pid == who]
        others_talking = {w for w, s, e in scored if w != who and s < end and e > start}
        duplicates += len([h for h in found if h.pid != who and h.pid not in others_talking])
        splits += max(len(own) - 1, 0)
        coverage.append(_heard_share(own, start, end))
        if not own:
            wrong += 1
            if k >= len(scored) - 2:
                missed += 1
    replays = [h for h in sim.heard
               if not any(h.start < e and h.end > s for _, s, e in sentences)]
    return {
        "phones": phones,
        "next talker starts": "mid-playback" if over_playback else "after it",
        "sentences": len(scored),
        "duplicates per sentence": duplicates / len(scored),
        "wrongly credited": wrong,
        "talker's sentence split": splits,
        "speech heard, 1st round, mean": float(np.mean(coverage[:phones])),
        "speech heard, 1st round, worst": min(coverage[:phones]),
        "speech heard, later, mean": float(np.mean(coverage[phones:-2])),
        "speech heard, later, worst": min(coverage[phones:-2]),
        "re-translations of playback": len(replays),
        "overlapping talkers missed": missed,
        "cpu % of a core per participant": 100 * sim.dsp_seconds / (total * phones),
        "groups": len(sim.tables.groups()),
        "echo paths": sim.tables.stats.echo_paths,
        "duplicates suppressed": sim.tables.stats.duplicates_suppressed,
        "echo-suppressed s": round(sim.tables.stats.echo_suppressed_seconds, 1),
    }


def _lay(parts: list[tuple[float, np.ndarray]], total: float) -> np.ndarray:
    out = np.zeros(round(total * RATE), np.float32)
    for at, audio in parts:
        start = round(at * RATE)
        piece = audio[: max(len(out) - start, 0)]
        out[start : start + len(piece)] += piece
    return out


def _covering(heard: list[Heard], start: float, end: float) -> list[Heard]:
    return [h for h in heard if h.start < end and h.end > start]


def _heard_share(own: list[Heard], start: float, end: float) -> float:
    """The share of [start, end] inside any of `own` (utterances do not overlap)."""
    inside = sum(max(0.0, min(h.end, end) - max(h.start, start)) for h in own)
    return inside / (end - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phones", type=int, nargs="*", default=[3, 6])
    parser.add_argument("--rounds", type=int, default=2,
                        help="turns of every owner (scored apart: the first, the later ones)")
    parser.add_argument("--verbose", action="store_true", help="list what was said and heard")
    args = parser.parse_args()
    rows = [run(n, over, args.rounds, args.verbose) for over in (False, True) for n in args.phones]
    keys = list(rows[0])
    width = max(len(k) for k in keys)
    for key in keys:
        cells = "".join(f"{_fmt(row[key]):>14}" for row in rows)
        print(f"{key:<{width}} {cells}")


def _fmt(value: float | str) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    main()
