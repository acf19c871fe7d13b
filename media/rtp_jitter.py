"""The receive buffer between a participant's RTP packets and their Opus decoder.

aiortc's own buffer waits on a missing packet until 16 newer ones have piled up, then
hands out one frame per arriving packet, so the pile it built never drains: one lost
packet became about 300 ms of delay for the rest of the call. This one waits a single
packet for a late one, then skips the hole and hands the decoder everything held, packed
as one multi-frame Opus packet (RFC 6716 section 3.2.5), so no backlog survives a loss.
"""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

REORDER_PACKETS = 1
"""Packets held while waiting for a missing one (20 ms): a packet overtaken by the next
still plays; one later than that is counted lost and skipped."""

MAX_MISORDER = 100
"""A jump of more sequence numbers than this (either way) is a restarted stream."""

MAX_OPUS_FRAMES = 6
"""An Opus packet carries at most 120 ms: six 20 ms frames."""

_CAPACITY = 16
"""Only for aiortc's `capacity` property; this buffer never holds more than a few."""


def _seq_delta(sequence: int, origin: int) -> int:
    """`sequence - origin` on the 16-bit RTP sequence circle, in -32768..32767."""
    return (sequence - origin + 0x8000) % 0x10000 - 0x8000


def _frame_length(length: int) -> bytes:
    if length < 252:
        return bytes([length])
    first = 252 + (length & 3)
    return bytes([first, (length - first) >> 2])


def opus_runs(payloads: list[bytes]) -> list[list[bytes]]:
    """Split consecutive Opus packets into runs that `join_opus` can make one packet of.

    Frames join only when they share a TOC configuration (mode, bandwidth, duration,
    channels); a packet that is not code 0, or a run at its 120 ms limit, starts a new one.
    """
    runs: list[list[bytes]] = []
    for payload in payloads:
        last = runs[-1] if runs else None
        if (
            last is not None
            and payload
            and payload[0] & 3 == 0
            and last[0][0] == payload[0]
            and len(last) < MAX_OPUS_FRAMES
        ):
            last.append(payload)
        else:
            runs.append([payload])
    return runs


def join_opus(run: list[bytes]) -> bytes:
    """One Opus packet (code 3, variable bitrate) of a run from `opus_runs`."""
    if len(run) == 1:
        return run[0]
    toc = (run[0][0] & 0xFC) | 3
    frames = [payload[1:] for payload in run]
    count = 0x80 | len(frames)  # variable-bitrate layout: every frame but the last sized
    sizes = b"".join(_frame_length(len(frame)) for frame in frames[:-1])
    return bytes([toc, count]) + sizes + b"".join(frames)


class AudioJitterBuffer(JitterBuffer):
    """aiortc's `JitterBuffer` interface for Opus audio, where a packet is a whole frame.

    A packet in order goes to the decoder at once (no prefetch: nothing to wait for).
    Counters: `lost` packets skipped, `late` packets that came after their slot was skipped.
    """

    def __init__(self, reorder: int = REORDER_PACKETS) -> None:
        super().__init__(capacity=_CAPACITY)
        self.reorder = reorder
        self._next: int | None = None
        self._held: dict[int, RtpPacket] = {}
        self.lost = 0
        self.late = 0

    @property
    def held(self) -> int:
        """Packets waiting on a missing one: the delay this buffer adds, in frames."""
        return len(self._held)

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        sequence = packet.sequence_number
        if self._next is None:
            self._next = sequence
        ahead = _seq_delta(sequence, self._next)
        if abs(ahead) > MAX_MISORDER:
            self._held.clear()
            self._next = sequence
            ahead = 0
        if ahead < 0 or sequence in self._held:
            self.late += 1
            return False, None
        self._held[sequence] = packet
        if self._next not in self._held and len(self._held) > self.reorder:
            oldest = min(self._held, key=lambda seq: _seq_delta(seq, self._next or 0))
            self.lost += _seq_delta(oldest, self._next)
            self._next = oldest
        return False, self._release()

    def _release(self) -> JitterFrame | None:
        assert self._next is not None
        ready: list[RtpPacket] = []
        while self._next in self._held:
            ready.append(self._held.pop(self._next))
            self._next = (self._next + 1) % 0x10000
        if not ready:
            return None
        runs = opus_runs([packet._data for packet in ready])  # type: ignore[attr-defined]
        # One packet goes to the decoder per arrival; should the frames not join into one,
        # the newest run plays and the older ones count as lost, rather than wait as delay.
        dropped = sum(len(run) for run in runs[:-1])
        self.lost += dropped
        return JitterFrame(data=join_opus(runs[-1]), timestamp=ready[dropped].timestamp)
