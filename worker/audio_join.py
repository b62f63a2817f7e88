"""Join speech made piece by piece into one take: one sample rate, the pieces' own
leading and trailing silence trimmed, short fades at every edge (no clicks), and the same
short pause between pieces (no gaps, no run-ons)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from worker.audio import decode_to_pcm, resample_pcm

__all__ = [
    "EDGE_MS",
    "FADE_MS",
    "PAUSE_MS",
    "SILENCE_LEVEL",
    "fade_edges",
    "join_speech",
    "to_pcm",
    "trim_silence",
]

PAUSE_MS = 250  # about a sentence break in read speech
FADE_MS = 8
EDGE_MS = 30  # silence kept at each trimmed edge, so onsets and tails are not clipped
SILENCE_LEVEL = 200  # |sample| below this (about -44 dBFS) counts as silence


def to_pcm(audio: bytes, audio_format: str, sample_rate: int | None) -> tuple[bytes, int]:
    """A provider's answer as s16le mono PCM and its rate."""
    if audio_format == "pcm":
        if sample_rate is None:
            raise ValueError("raw pcm needs its sample rate")
        return audio, sample_rate
    return decode_to_pcm(audio)


def join_speech(
    pieces: Sequence[tuple[bytes, int]], *, pause_ms: int = PAUSE_MS
) -> tuple[bytes, int]:
    """Join (pcm, rate) pieces at the first piece's rate."""
    if not pieces:
        raise ValueError("nothing to join")
    rate = pieces[0][1]
    pause = np.zeros(int(rate * pause_ms / 1000), dtype=np.int16)
    parts: list[np.ndarray] = []
    for pcm, piece_rate in pieces:
        samples = np.frombuffer(resample_pcm(pcm, piece_rate, rate), dtype="<i2")
        samples = fade_edges(trim_silence(samples, rate), rate)
        if parts:
            parts.append(pause)
        parts.append(samples)
    return np.concatenate(parts).astype("<i2").tobytes(), rate


def trim_silence(samples: np.ndarray, rate: int) -> np.ndarray:
    """s16 mono `samples` without their leading and trailing silence, keeping EDGE_MS of it
    at each end; empty if the whole piece is silent. A view, not a copy."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) >= SILENCE_LEVEL)
    if loud.size == 0:
        return samples[:0]
    edge = int(rate * EDGE_MS / 1000)
    return samples[max(0, loud[0] - edge) : loud[-1] + 1 + edge]


def fade_edges(samples: np.ndarray, rate: int) -> np.ndarray:
    """s16 mono `samples` with linear FADE_MS fades in and out: the first and last samples
    become 0, so whatever comes next (silence, another piece) joins without a click."""
    length = min(int(rate * FADE_MS / 1000), samples.size // 2)
    if length == 0:
        return samples
    out = samples.astype(np.float32)
    ramp = np.linspace(0.0, 1.0, length, dtype=np.float32)
    out[:length] *= ramp
    out[-length:] *= ramp[::-1]
    return np.round(out).astype(np.int16)
