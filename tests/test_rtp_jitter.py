"""The receive buffer in front of the Opus decoder: losses and reordering leave no delay."""

from __future__ import annotations

import fractions

import av
import numpy as np
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.rtp import RtpPacket

from media.frames import FRAME_SAMPLES, MIX_RATE
from media.rtp_jitter import AudioJitterBuffer, join_opus, opus_runs


def opus_packets(count: int, start_seq: int = 0) -> list[RtpPacket]:
    """`count` RTP packets of a 440 Hz tone, each one 20 ms Opus frame, as aiortc depayloads."""
    encoder = OpusEncoder()
    packets = []
    for index in range(count):
        t = np.arange(FRAME_SAMPLES) + index * FRAME_SAMPLES
        tone = (np.sin(2 * np.pi * 440 * t / MIX_RATE) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(tone[np.newaxis, :], format="s16", layout="mono")
        frame.sample_rate = MIX_RATE
        frame.pts = index * FRAME_SAMPLES
        frame.time_base = fractions.Fraction(1, MIX_RATE)
        payloads, _ = encoder.encode(frame)
        for payload in payloads:
            packet = RtpPacket(
                payload_type=111,
                sequence_number=(start_seq + len(packets)) % 0x10000,
                timestamp=len(packets) * FRAME_SAMPLES,
            )
            packet._data = payload  # type: ignore[attr-defined]
            packets.append(packet)
    return packets


def feed(buffer: AudioJitterBuffer, packets: list[RtpPacket]) -> list[int]:
    """Adds each packet; the decoded samples each arrival hands out (0: nothing)."""
    decoder = OpusDecoder()
    out = []
    for packet in packets:
        _, frame = buffer.add(packet)
        out.append(sum(f.samples for f in decoder.decode(frame)) if frame else 0)
    return out


def test_in_order_packets_are_decoded_on_arrival() -> None:
    buffer = AudioJitterBuffer()
    assert feed(buffer, opus_packets(10)) == [FRAME_SAMPLES] * 10
    assert buffer.held == 0 and buffer.lost == 0


def test_a_lost_packet_is_skipped_and_leaves_no_backlog() -> None:
    # The pattern of aiortc's own jitter-buffer tests: a run with one sequence number missing.
    packets = opus_packets(40, start_seq=65530)  # across the 16-bit wrap, too
    del packets[10]
    out = feed(AudioJitterBuffer(), packets)
    assert out[:10] == [FRAME_SAMPLES] * 10
    # Waits one packet for the missing one, then plays both held frames in one packet...
    assert out[10:12] == [0, 2 * FRAME_SAMPLES]
    # ...and from then on every packet plays on arrival: the delay is what it was.
    assert out[12:] == [FRAME_SAMPLES] * (len(packets) - 12)


def test_every_loss_in_a_burst_pattern_recovers_at_once() -> None:
    packets = opus_packets(200)
    kept = [p for i, p in enumerate(packets) if i % 17 not in (5, 6, 7)]
    buffer = AudioJitterBuffer()
    out = feed(buffer, kept)
    assert buffer.lost == 3 * sum(1 for i in range(200) if i % 17 == 5)
    assert buffer.held == 0
    assert sum(out) == len(kept) * FRAME_SAMPLES  # every packet that arrived was played
    assert max(out) <= 2 * FRAME_SAMPLES  # never more than one frame was held back


def test_a_packet_overtaken_by_the_next_still_plays_in_order() -> None:
    packets = opus_packets(6)
    packets[2], packets[3] = packets[3], packets[2]
    buffer = AudioJitterBuffer()
    assert feed(buffer, packets) == [FRAME_SAMPLES, FRAME_SAMPLES, 0, 2 * FRAME_SAMPLES,
                                     FRAME_SAMPLES, FRAME_SAMPLES]
    assert buffer.lost == 0 and buffer.late == 0


def test_a_packet_later_than_its_skipped_slot_is_dropped() -> None:
    packets = opus_packets(8)
    late = packets.pop(2)
    packets.insert(5, late)
    buffer = AudioJitterBuffer()
    out = feed(buffer, packets)
    assert out[5] == 0 and buffer.late == 1 and buffer.lost == 1 and buffer.held == 0


def test_a_restarted_stream_starts_over() -> None:
    buffer = AudioJitterBuffer()
    feed(buffer, opus_packets(5))
    assert feed(buffer, opus_packets(5, start_seq=30000)) == [FRAME_SAMPLES] * 5


def test_frames_of_different_configurations_are_not_joined() -> None:
    a, b = b"\x78abc", b"\xfcdef"
    assert opus_runs([a, a, b, b, b]) == [[a, a], [b, b, b]]
    joined = join_opus([b"\xfc" + bytes(300), b"\xfc" + bytes(5)])
    assert joined[:2] == bytes([0xFF, 0x82]) and len(joined) == 2 + 2 + 300 + 5
