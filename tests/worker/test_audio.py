import io
from pathlib import Path

import av
import numpy as np
import pytest

from worker.audio import (
    ENCODABLE_FORMATS,
    InvalidAudio,
    decode_to_pcm,
    encode_pcm,
    pcm_duration_seconds,
    probe,
    sniff_audio_format,
    transcode,
)

RATE = 22_050

# format -> (canonical codec name, sample rate probe should report)
EXPECTED = {
    "mp3": ("mp3", RATE),
    "opus": ("opus", 48_000),
    "aac": ("aac", RATE),
    "flac": ("flac", RATE),
    "wav": ("pcm_s16le", RATE),
}

# ADTS cannot signal AAC's 1024 priming samples, and the tail is padded to a whole
# 1024-sample frame, so up to two frames (0.093 s at 22.05 kHz) come on top of the 5%.
EXTRA_SLACK_SECONDS = {"aac": 2 * 1024 / RATE}


def make_sine_pcm(seconds: float = 1.0, rate: int = RATE, hz: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t) * 32767).astype("<i2").tobytes()


class _Unseekable(io.RawIOBase):
    """A write-only stream, like a browser recording: muxers cannot go back to fill in duration."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return self.buffer.write(data)


def encode_with_pyav(
    pcm: bytes, rate: int, container_format: str, codec: str, *, seekable: bool = True
) -> bytes:
    """Containers encode_pcm does not produce (mp4, webm), as uploads often are."""
    output = io.BytesIO() if seekable else _Unseekable()
    with av.open(output, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        container.mux(stream.encode(None))
    return output.getvalue() if isinstance(output, io.BytesIO) else output.buffer.getvalue()


def make_m4a(pcm: bytes, rate: int) -> bytes:
    return encode_with_pyav(pcm, rate, "mp4", "aac")


@pytest.fixture(scope="module")
def sine_pcm() -> bytes:
    return make_sine_pcm()


@pytest.mark.parametrize("fmt", list(EXPECTED))
def test_encode_pcm_round_trips_through_probe(sine_pcm: bytes, fmt: str) -> None:
    encoded = encode_pcm(sine_pcm, RATE, fmt)

    info = probe(encoded)
    codec, rate = EXPECTED[fmt]
    assert info.codec_name == codec
    assert info.sample_rate == rate
    assert info.channels == 1
    assert info.duration_seconds == pytest.approx(
        1.0, rel=0.05, abs=EXTRA_SLACK_SECONDS.get(fmt, 0.0)
    )


@pytest.mark.parametrize("fmt", list(EXPECTED))
def test_encode_pcm_decodes_to_same_length(sine_pcm: bytes, fmt: str) -> None:
    pcm, rate = decode_to_pcm(encode_pcm(sine_pcm, RATE, fmt), RATE)

    assert rate == RATE
    assert pcm_duration_seconds(pcm, rate) == pytest.approx(
        1.0, rel=0.05, abs=EXTRA_SLACK_SECONDS.get(fmt, 0.0)
    )


def test_encode_pcm_passthrough(sine_pcm: bytes) -> None:
    assert encode_pcm(sine_pcm, RATE, "pcm") is sine_pcm


def test_encode_pcm_unknown_format(sine_pcm: bytes) -> None:
    with pytest.raises(ValueError):
        encode_pcm(sine_pcm, RATE, "midi")


def test_encode_pcm_odd_rate_goes_to_next_supported_rate() -> None:
    # 23 kHz is no MP3 rate; the encoder gets 24 kHz instead of failing.
    encoded = encode_pcm(make_sine_pcm(rate=23_000), 23_000, "mp3")

    assert probe(encoded).sample_rate == 24_000


def test_encode_pcm_empty_input() -> None:
    with pytest.raises(ValueError):
        encode_pcm(b"", RATE, "wav")


def test_encode_pcm_wav_is_lossless(sine_pcm: bytes) -> None:
    pcm, rate = decode_to_pcm(encode_pcm(sine_pcm, RATE, "wav"))

    assert (pcm, rate) == (sine_pcm, RATE)


def test_decode_to_pcm_resamples(sine_pcm: bytes) -> None:
    wav = encode_pcm(sine_pcm, RATE, "wav")

    pcm, rate = decode_to_pcm(wav, 16_000)

    assert rate == 16_000
    assert len(pcm) // 2 == pytest.approx(16_000, abs=32)
    # The tone survives: the strongest frequency is still 440 Hz.
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * rate / len(samples)
    assert peak_hz == pytest.approx(440, abs=2)


def test_decode_to_pcm_reads_path(sine_pcm: bytes, tmp_path: Path) -> None:
    path = tmp_path / "tone.flac"
    path.write_bytes(encode_pcm(sine_pcm, RATE, "flac"))

    assert decode_to_pcm(path) == (sine_pcm, RATE)


def test_decode_to_pcm_garbage() -> None:
    with pytest.raises(InvalidAudio):
        decode_to_pcm(b"this is not audio" * 20)


def test_transcode_pcm_to_opus(sine_pcm: bytes) -> None:
    data, rate = transcode(sine_pcm, "pcm", "opus", src_sample_rate=RATE)

    assert rate == 48_000
    assert probe(data).codec_name == "opus"


def test_transcode_mp3_to_wav(sine_pcm: bytes) -> None:
    mp3 = encode_pcm(sine_pcm, RATE, "mp3")

    data, rate = transcode(mp3, "mp3", "wav")

    assert rate == RATE
    info = probe(data)
    assert info.codec_name == "pcm_s16le"
    assert info.duration_seconds == pytest.approx(1.0, rel=0.05)


def test_transcode_same_format_is_unchanged(sine_pcm: bytes) -> None:
    flac = encode_pcm(sine_pcm, RATE, "flac")

    assert transcode(flac, "flac", "flac") == (flac, RATE)
    assert transcode(sine_pcm, "pcm", "pcm", src_sample_rate=RATE) == (sine_pcm, RATE)


def test_transcode_pcm_needs_rate(sine_pcm: bytes) -> None:
    with pytest.raises(ValueError):
        transcode(sine_pcm, "pcm", "mp3")


def test_probe_garbage() -> None:
    with pytest.raises(InvalidAudio):
        probe(b"\x00\x01garbage" * 100)


def test_probe_empty() -> None:
    with pytest.raises(InvalidAudio):
        probe(b"")


def test_probe_m4a(sine_pcm: bytes) -> None:
    info = probe(make_m4a(sine_pcm, RATE))

    assert info.codec_name == "aac"
    assert "mp4" in info.format_name
    assert info.duration_seconds == pytest.approx(1.0, rel=0.05, abs=EXTRA_SLACK_SECONDS["aac"])


def test_probe_webm_without_duration_counts_samples() -> None:
    # Written unseekably, the webm has no duration field, so probe decodes to count samples.
    webm = encode_with_pyav(make_sine_pcm(rate=48_000), 48_000, "webm", "libopus", seekable=False)

    info = probe(webm)

    assert info.codec_name == "opus"
    assert info.duration_seconds == pytest.approx(1.0, rel=0.05)


def test_pcm_duration_seconds() -> None:
    assert pcm_duration_seconds(b"\x00\x00" * 44_100, 22_050) == 2.0


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("mp3", "mp3"), ("opus", "ogg"), ("flac", "flac"), ("wav", "wav"), ("aac", None)],
)
def test_sniff_audio_format_encoded(sine_pcm: bytes, fmt: str, expected: str | None) -> None:
    # aac is raw ADTS: not an upload format, and its sync word must not pass for MP3.
    assert sniff_audio_format(encode_pcm(sine_pcm, RATE, fmt)[:16]) == expected


def test_sniff_audio_format_m4a(sine_pcm: bytes) -> None:
    assert sniff_audio_format(make_m4a(sine_pcm, RATE)[:16]) == "mp4"


def test_sniff_audio_format_webm() -> None:
    webm = encode_with_pyav(make_sine_pcm(rate=48_000), 48_000, "webm", "libopus")

    assert sniff_audio_format(webm[:16]) == "webm"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"ID3\x04\x00\x00\x00\x00\x00\x00", "mp3"),
        (b"\xff\xfb\x90\x00", "mp3"),  # MPEG-1 Layer III frame, no ID3 tag
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "webm"),
        (b"", None),
        (b"garbage garbage garbage", None),
        (b"RIFF\x24\x00\x00\x00AVI LIST", None),
    ],
)
def test_sniff_audio_format_heads(head: bytes, expected: str | None) -> None:
    assert sniff_audio_format(head) == expected


def test_encodable_formats_cover_api_formats() -> None:
    assert set(ENCODABLE_FORMATS) == {"mp3", "opus", "aac", "flac", "wav", "pcm"}
