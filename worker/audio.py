"""Audio helpers built on PyAV: encode, decode, transcode, probe and sniff.

"pcm" everywhere means raw signed 16-bit little-endian mono samples, the lingua franca
between providers (Piper hands it out, encoders take it in).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from av.container import InputContainer

__all__ = [
    "ENCODABLE_FORMATS",
    "AudioInfo",
    "InvalidAudio",
    "encode_pcm",
    "decode_to_pcm",
    "transcode",
    "probe",
    "pcm_duration_seconds",
    "resample_pcm",
    "output_rate",
    "sniff_audio_format",
]

_SAMPLE_WIDTH = 2  # bytes per s16 sample


@dataclass(frozen=True)
class _Encoding:
    container: str  # PyAV/FFmpeg muxer name
    codec: str  # PyAV/FFmpeg encoder name
    fixed_rate: int | None = None  # the only rate the encoder is fed, if any


# Opus always runs at 48 kHz internally and its decoders output 48 kHz, so feed it that.
_ENCODINGS: dict[str, _Encoding] = {
    "mp3": _Encoding("mp3", "libmp3lame"),
    "opus": _Encoding("ogg", "libopus", fixed_rate=48_000),
    "aac": _Encoding("adts", "aac"),
    "flac": _Encoding("flac", "flac"),
    "wav": _Encoding("wav", "pcm_s16le"),
}

ENCODABLE_FORMATS: tuple[str, ...] = (*_ENCODINGS, "pcm")


class InvalidAudio(ValueError):
    """PyAV could not open the data, or found no audio stream in it."""


@dataclass(frozen=True)
class AudioInfo:
    format_name: str  # as FFmpeg names the demuxer, e.g. "mp3", "ogg", "mov,mp4,m4a,3gp,3g2,mj2"
    codec_name: str  # FFmpeg's canonical codec name, e.g. "mp3", "opus", "aac", "pcm_s16le"
    duration_seconds: float
    sample_rate: int
    channels: int


def pcm_duration_seconds(pcm: bytes, sample_rate: int) -> float:
    return len(pcm) / (_SAMPLE_WIDTH * sample_rate)


def encode_pcm(pcm: bytes, sample_rate: int, fmt: str) -> bytes:
    """Encode s16le mono PCM to `fmt` (one of ENCODABLE_FORMATS); "pcm" returns it unchanged."""
    if fmt == "pcm":
        return pcm
    if not pcm:
        # PyAV writes the container header with the first packet, so there would be no file.
        raise ValueError("cannot encode empty pcm")
    encoding = _get_encoding(fmt)
    out_rate = output_rate(fmt, sample_rate)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=encoding.container) as container:
        stream = container.add_stream(encoding.codec, rate=out_rate, layout="mono")
        codec_context = stream.codec_context
        # Open now so frame_size is known: aac/mp3/opus take fixed-size frames only.
        codec_context.open()
        resampler = av.AudioResampler(
            format=stream.format.name,
            layout="mono",
            rate=out_rate,
            frame_size=codec_context.frame_size or None,
        )
        frames = resampler.resample(_pcm_to_frame(pcm, sample_rate))
        frames += resampler.resample(None)  # flush the tail, padded to a whole frame
        for frame in frames:
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush the encoder's delayed packets
    return buffer.getvalue()


def decode_to_pcm(data_or_path: bytes | Path, sample_rate: int | None = None) -> tuple[bytes, int]:
    """Decode the first audio stream to s16le mono at `sample_rate` (default: the source rate)."""
    with _open_input(data_or_path) as container:
        stream = container.streams.audio[0]
        rate = sample_rate or stream.rate
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        chunks: list[bytes] = []
        try:
            for frame in container.decode(stream):
                chunks.extend(_frame_bytes(f) for f in resampler.resample(frame))
            chunks.extend(_frame_bytes(f) for f in resampler.resample(None))
        except av.FFmpegError as exc:
            raise InvalidAudio(f"cannot decode audio: {exc}") from exc
    return b"".join(chunks), rate


def resample_pcm(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """s16le mono PCM from one sample rate to another."""
    if from_rate == to_rate or not pcm:
        return pcm
    resampler = av.AudioResampler(format="s16", layout="mono", rate=to_rate)
    frames = resampler.resample(_pcm_to_frame(pcm, from_rate)) + resampler.resample(None)
    return b"".join(_frame_bytes(f) for f in frames)


def transcode(
    data: bytes, src_format: str, dst_format: str, src_sample_rate: int | None = None
) -> tuple[bytes, int]:
    """Re-encode `data` to `dst_format`; return the bytes and their sample rate.

    `src_format` "pcm" needs `src_sample_rate`; other sources are decoded by PyAV.
    """
    if src_format == "pcm":
        if src_sample_rate is None:
            raise ValueError("src_sample_rate is required for pcm input")
        if dst_format == "pcm":
            return data, src_sample_rate
        pcm, rate = data, src_sample_rate
    elif src_format == dst_format:
        return data, src_sample_rate or probe(data).sample_rate
    else:
        pcm, rate = decode_to_pcm(data)
    return encode_pcm(pcm, rate, dst_format), output_rate(dst_format, rate)


def probe(data_or_path: bytes | Path | BinaryIO) -> AudioInfo:
    """Describe the first audio stream; raise InvalidAudio if there is none."""
    with _open_input(data_or_path) as container:
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            # Streamed containers (browser webm, raw ADTS) may carry no duration: count samples.
            try:
                samples = sum(frame.samples for frame in container.decode(stream))
            except av.FFmpegError as exc:
                raise InvalidAudio(f"cannot decode audio: {exc}") from exc
            duration = samples / stream.rate
        return AudioInfo(
            format_name=container.format.name,
            # canonical_name: "mp3", not the decoder implementation's "mp3float"
            codec_name=stream.codec_context.codec.canonical_name,
            duration_seconds=duration,
            sample_rate=stream.rate,
            channels=stream.channels,
        )


def sniff_audio_format(head: bytes) -> str | None:
    """Guess the container from its first bytes (16 are enough); None if unknown."""
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head.startswith(b"ID3"):
        return "mp3"
    # MPEG audio frame sync: 11 set bits, then a layer other than 00 (00 is ADTS AAC).
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06:
        return "mp3"
    return None


def _get_encoding(fmt: str) -> _Encoding:
    try:
        return _ENCODINGS[fmt]
    except KeyError:
        raise ValueError(f"unsupported audio format {fmt!r}") from None


def output_rate(fmt: str, sample_rate: int) -> int:
    """The rate `fmt` is encoded at: the input rate if the codec takes it, else the next one up."""
    if fmt == "pcm":
        return sample_rate
    encoding = _get_encoding(fmt)
    if encoding.fixed_rate is not None:
        return encoding.fixed_rate
    supported = av.Codec(encoding.codec, "w").audio_rates
    if not supported or sample_rate in supported:
        return sample_rate
    higher = [rate for rate in supported if rate > sample_rate]
    return min(higher) if higher else max(supported)


def _pcm_to_frame(pcm: bytes, sample_rate: int) -> av.AudioFrame:
    if len(pcm) % _SAMPLE_WIDTH:
        raise ValueError("pcm length must be a whole number of 16-bit samples")
    samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = sample_rate
    # Timestamps let the resampler stamp its output frames, so the muxer sees real pts.
    frame.pts = 0
    frame.time_base = Fraction(1, sample_rate)
    return frame


def _frame_bytes(frame: av.AudioFrame) -> bytes:
    # via numpy rather than frame.planes, whose buffers may carry alignment padding
    return frame.to_ndarray().astype("<i2", copy=False).tobytes()


@contextmanager
def _open_input(data_or_path: bytes | Path | BinaryIO) -> Iterator[InputContainer]:
    source: BinaryIO | str
    if isinstance(data_or_path, bytes):
        source = io.BytesIO(data_or_path)
    elif isinstance(data_or_path, Path | str):
        source = str(data_or_path)
    else:
        source = data_or_path  # an open file, e.g. a spooled upload
    try:
        container = av.open(source, mode="r", metadata_errors="ignore")
    except FileNotFoundError:
        raise  # a missing file is the caller's bug, not bad audio
    except av.FFmpegError as exc:
        raise InvalidAudio(f"cannot open audio: {exc}") from exc
    with container:
        if not container.streams.audio:
            raise InvalidAudio("no audio stream found")
        yield container
