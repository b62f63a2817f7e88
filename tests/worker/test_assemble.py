"""Audiobook audio: chapter assembly, BS.1770 loudness, normalization, rendering, M4B.

All audio is made here with numpy and written with PyAV; nothing is mocked.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import av
import numpy as np
import pytest

from worker.audio import encode_pcm, probe
from worker.audio_join import EDGE_MS
from worker.audiobook.assemble import (
    PEAK_CEILING_DBFS,
    SAMPLE_RATE,
    TARGET_LUFS,
    BookPart,
    ChapterMaster,
    LoudnessMeter,
    SegmentAudio,
    assemble_chapter,
    build_m4b,
    normalization_gain_db,
    read_chapter_markers,
    render_book_part,
    render_chapter,
)

AMPLITUDE = 12000  # the test tones' peak, in s16 units
NOISE = 20  # the noise floor standing in for "silence" around speech: well under the level
EDGE = SAMPLE_RATE * EDGE_MS // 1000  # near-silence kept at each trimmed edge


def _sine(
    seconds: float,
    rate: int,
    *,
    freq: float = 220.0,
    amplitude: float = AMPLITUDE,
    phase: float = 0.0,
) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t + phase)


def _speech(
    tone_s: float, rate: int, pad_s: float, *, seed: int, abrupt: bool = False
) -> np.ndarray:
    """A tone standing in for speech, between `pad_s` of low noise on each side; `abrupt`
    starts and ends it at full amplitude (a cosine), which would click without a fade."""
    rng = np.random.default_rng(seed)
    pad = rng.integers(-NOISE, NOISE + 1, round(pad_s * rate))
    tone = _sine(tone_s, rate, phase=math.pi / 2 if abrupt else 0.0)
    return np.round(np.concatenate([pad, tone, pad[::-1]])).astype(np.int16)


def _write_flac(path: Path, samples: np.ndarray, rate: int) -> Path:
    path.write_bytes(encode_pcm(samples.astype("<i2").tobytes(), rate, "flac"))
    return path


def _write_wav(path: Path, channels: list[np.ndarray], rate: int) -> Path:
    """s16 WAV with one or two channels (pcm_s16le takes frames of any size)."""
    layout = "mono" if len(channels) == 1 else "stereo"
    interleaved = np.stack(channels, axis=1).astype(np.int16).reshape(1, -1)
    with av.open(str(path), mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(interleaved, format="s16", layout=layout)
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """The first audio stream as mono float samples (full scale 1.0) and its rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        blocks = [
            out.to_ndarray().reshape(-1)
            for frame in container.decode(stream)
            for out in resampler.resample(frame)
        ]
        blocks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(blocks), rate


def _loudness(samples: np.ndarray, rate: int) -> float | None:
    meter = LoudnessMeter(rate)
    meter.add(samples)
    return meter.integrated_lufs()


def _lufs(samples: np.ndarray, rate: int) -> float:
    """Loudness of audio that is known not to be silent."""
    lufs = _loudness(samples, rate)
    assert lufs is not None
    return lufs


def _master_lufs(master: ChapterMaster) -> float:
    assert master.loudness_lufs is not None
    return master.loudness_lufs


def _zero_runs(samples: np.ndarray, min_length: int) -> list[tuple[int, int]]:
    """(start, length) of every run of exact zeros at least `min_length` long."""
    padded = np.concatenate([[False], samples == 0, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    runs = zip(edges[::2], edges[1::2] - edges[::2], strict=True)
    return [(int(start), int(length)) for start, length in runs if length >= min_length]


def _tone_chapter(
    tmp_path: Path,
    name: str,
    dbfs: float,
    *,
    seconds: float = 1.5,
    freq: float = 440.0,
    rate: int = SAMPLE_RATE,
) -> ChapterMaster:
    """A chapter of one segment: a tone peaking at `dbfs`."""
    amplitude = 32768 * 10 ** (dbfs / 20)
    tone = np.round(_sine(seconds, rate, freq=freq, amplitude=amplitude)).astype(np.int16)
    segment = SegmentAudio(_write_flac(tmp_path / f"{name}.flac", tone, rate), 0)
    return assemble_chapter([segment], tmp_path / f"{name}-master.flac", sample_rate=rate)


# --- the meter ---------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [48000, 24000])
def test_meter_reads_the_bs1770_reference_sine(rate: int) -> None:
    # A 0 dBFS 997 Hz mono sine is -3.01 LUFS, so one at -20 dBFS is -23.01 LUFS.
    sine = _sine(3.0, rate, freq=997.0, amplitude=10 ** (-20 / 20))
    whole = _loudness(sine, rate)
    assert whole == pytest.approx(-23.01, abs=0.2)
    # Streaming: any chunking gives the same answer (filter state and blocks carry over).
    meter = LoudnessMeter(rate)
    for start in range(0, sine.size, 1777):
        meter.add(sine[start : start + 1777])
    assert meter.integrated_lufs() == pytest.approx(whole, abs=1e-9)


def test_meter_gates_silence_and_quiet_passages() -> None:
    rate = 24000
    assert _loudness(np.zeros(rate * 2), rate) is None
    assert _loudness(np.zeros(0), rate) is None
    assert _loudness(_sine(0.3, rate, amplitude=0.5), rate) is None  # no whole 400 ms block
    # 30 dB quieter than the rest: under the relative gate, so it barely moves the result
    # (an ungated mean would read about 3 LU lower).
    loud = _sine(2.0, rate, freq=997.0, amplitude=0.1)
    quiet = _sine(2.0, rate, freq=997.0, amplitude=0.1 * 10 ** (-30 / 20))
    assert _loudness(np.concatenate([loud, quiet]), rate) == pytest.approx(-23.0, abs=0.5)


# --- assembling a chapter ----------------------------------------------------------------


def test_assemble_chapter_trims_resamples_pauses_and_fades(tmp_path: Path) -> None:
    # (rate, tone seconds, noise padding seconds, pause after, abrupt edges)
    plan = [
        (16000, 0.5, 0.2, 250, False),
        (22050, 0.4, 0.0, 600, True),
        (48000, 0.3, 0.15, 400, False),  # written as stereo
        (24000, 0.35, 0.25, 999, False),  # the last pause is ignored
    ]
    segments = []
    for index, (rate, tone_s, pad_s, pause_ms, abrupt) in enumerate(plan):
        speech = _speech(tone_s, rate, pad_s, seed=index, abrupt=abrupt)
        if index == 2:
            path = _write_wav(tmp_path / "s2.wav", [speech, speech], rate)
        elif index == 1:
            path = _write_wav(tmp_path / "s1.wav", [speech], rate)
        else:
            path = _write_flac(tmp_path / f"s{index}.flac", speech, rate)
        segments.append(SegmentAudio(path, pause_ms))

    master = assemble_chapter(iter(segments), tmp_path / "chapter.flac", lead_ms=300, tail_ms=700)

    info = probe(master.path)
    assert (info.codec_name, info.sample_rate, info.channels) == ("flac", SAMPLE_RATE, 1)
    assert master.sample_rate == SAMPLE_RATE
    pcm, rate = _decode(master.path)
    samples = np.round(pcm * 32768).astype(np.int32)
    assert samples.size / rate == pytest.approx(master.duration_seconds, abs=1e-6)

    # Expected layout, in samples at 24 kHz: a padded segment keeps EDGE of its noise on
    # each side, an unpadded one keeps all of itself; the pauses lie between.
    lead, tail = 300 * 24, 700 * 24
    speech_lengths = [round(tone * 24000) + (2 * EDGE if pad else 0) for _, tone, pad, _, _ in plan]
    pauses = [pause * 24 for _, _, _, pause, _ in plan[:-1]]
    expected = lead + sum(speech_lengths) + sum(pauses) + tail
    assert abs(samples.size - expected) <= 24 * 5  # within 5 ms

    # Digital silence exactly where it belongs: lead, every pause, tail. A run may be a
    # few samples longer, where a fade rounds the noise floor's first samples to 0.
    runs = _zero_runs(samples, min_length=24 * 20)
    silences = [lead, *pauses, tail]
    assert len(runs) == len(silences)
    position = 0
    for (start, length), silence, speech_length in zip(
        runs, silences, [*speech_lengths, 0], strict=True
    ):
        assert abs(start - position) <= 24 * 3
        assert silence <= length <= silence + 24 * 2
        position = start + length + speech_length
    assert runs[0][0] == 0 and sum(runs[-1]) == samples.size

    # No clicks: every trimmed segment starts and ends at about 0 and nothing jumps, across
    # the joins or anywhere else (the 220 Hz tone itself moves at most ~0.06 * AMPLITUDE).
    for start, length in runs:
        if start > 0:
            assert abs(samples[start - 1]) < 0.01 * AMPLITUDE
        if start + length < samples.size:
            assert abs(samples[start + length]) < 0.01 * AMPLITUDE
        join = samples[max(0, start - 480) : start + length + 480]
        assert np.max(np.abs(np.diff(join))) < 0.1 * AMPLITUDE
    assert np.max(np.abs(np.diff(samples))) < 0.1 * AMPLITUDE

    # Measured while writing, equal to measuring the file afterwards.
    assert master.loudness_lufs == pytest.approx(_loudness(pcm, rate), abs=0.01)
    assert master.peak_dbfs == pytest.approx(20 * math.log10(np.abs(samples).max() / 32768))


def test_a_silent_chapter_has_no_loudness_and_no_gain(tmp_path: Path) -> None:
    silent = SegmentAudio(_write_flac(tmp_path / "quiet.flac", np.zeros(8000, np.int16), 16000), 0)
    master = assemble_chapter([silent, silent], tmp_path / "m.flac", lead_ms=100, tail_ms=200)
    assert master.loudness_lufs is None
    assert master.peak_dbfs == -math.inf
    assert master.duration_seconds == pytest.approx(0.3)
    assert normalization_gain_db(master) == 0.0
    with pytest.raises(ValueError):
        assemble_chapter([], tmp_path / "none.flac")
    assert not (tmp_path / "none.flac").exists()


# --- normalization -----------------------------------------------------------------------


def test_chapters_at_different_levels_render_to_the_target(tmp_path: Path) -> None:
    quiet = _tone_chapter(tmp_path, "quiet", -35.0)
    loud = _tone_chapter(tmp_path, "loud", -12.0, freq=1000.0)
    assert _master_lufs(loud) - _master_lufs(quiet) > 20
    measured = []
    for master in (quiet, loud):
        gain = normalization_gain_db(master)
        assert gain == pytest.approx(TARGET_LUFS - _master_lufs(master))  # not capped
        rendered = render_chapter(master, gain, "wav", tmp_path / f"{master.path.stem}.wav")
        measured.append(_lufs(*_decode(rendered.path)))
    assert all(abs(lufs - TARGET_LUFS) < 0.5 for lufs in measured)
    assert abs(measured[0] - measured[1]) < 0.5


def test_peaks_are_limited_below_the_ceiling_without_losing_loudness(tmp_path: Path) -> None:
    rate = SAMPLE_RATE
    tone = _sine(1.5, rate, freq=440.0, amplitude=32768 * 10 ** (-24 / 20))
    for at in (0.5, 1.0):  # clicks that peak near full scale, too short to count as loud
        start = round(at * rate)
        tone[start : start + 4] += _sine(4 / rate, rate, freq=3000.0, amplitude=30000)
    path = _write_flac(tmp_path / "peaky.flac", np.round(tone).astype(np.int16), rate)
    master = assemble_chapter([SegmentAudio(path, 0)], tmp_path / "peaky-master.flac")
    assert master.peak_dbfs > -1.0
    gain = normalization_gain_db(master)
    assert gain == pytest.approx(TARGET_LUFS - _master_lufs(master))  # the full gain
    assert gain > 3  # enough to push the clicks far over the ceiling
    rendered = render_chapter(master, gain, "flac", tmp_path / "peaky.out.flac")
    samples, out_rate = _decode(rendered.path)
    assert 20 * math.log10(np.abs(samples).max()) <= PEAK_CEILING_DBFS + 0.01
    # The bursts were bent, not the chapter turned down: it is as loud as the others.
    assert abs(_lufs(samples, out_rate) - TARGET_LUFS) < 0.5


def test_the_limiter_is_transparent_below_its_knee() -> None:
    from worker.audiobook.assemble import LIMIT_THRESHOLD_DBFS, _apply_gain

    quiet = np.linspace(-1, 1, 1001, dtype=np.float32) * np.float32(
        10 ** ((LIMIT_THRESHOLD_DBFS - 0.1) / 20)
    )
    assert np.array_equal(_apply_gain(quiet, 0.0), quiet)
    loud = np.linspace(-4, 4, 1001, dtype=np.float32)
    limited = _apply_gain(loud, 0.0)
    assert np.all(np.abs(limited) <= np.float32(10 ** (PEAK_CEILING_DBFS / 20)))
    assert np.all(np.diff(limited) >= 0)  # monotonic: no folding, no clicks


# --- rendering ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "codec"),
    [("mp3", "mp3"), ("opus", "opus"), ("aac", "aac"), ("flac", "flac"), ("wav", "pcm_s16le")],
)
def test_render_chapter_in_every_format(tmp_path: Path, fmt: str, codec: str) -> None:
    master = _tone_chapter(tmp_path, "chapter", -20.0, seconds=1.0)
    rendered = render_chapter(master, 2.0, fmt, tmp_path / f"out.{fmt}")
    assert rendered.bytes == rendered.path.stat().st_size > 0
    assert rendered.duration_seconds == pytest.approx(master.duration_seconds)
    assert probe(rendered.path).codec_name == codec
    samples, rate = _decode(rendered.path)
    assert rate == rendered.sample_rate == (48000 if fmt == "opus" else SAMPLE_RATE)
    # Lossy codecs add priming and pad the last frame: a few hundredths of a second.
    assert samples.size / rate == pytest.approx(master.duration_seconds, abs=0.1)


def test_render_chapter_rejects_other_formats(tmp_path: Path) -> None:
    master = _tone_chapter(tmp_path, "chapter", -20.0, seconds=0.5)
    with pytest.raises(ValueError):
        render_chapter(master, 0.0, "pcm", tmp_path / "out.pcm")


# --- the M4B -----------------------------------------------------------------------------


def test_book_parts_remux_into_an_m4b_opened_one_at_a_time(tmp_path: Path) -> None:
    masters = [
        _tone_chapter(tmp_path, "one", -25.0, seconds=0.6),
        _tone_chapter(tmp_path, "two", -15.0, seconds=1.1, rate=16000),  # another rate
        _tone_chapter(tmp_path, "three", -20.0, seconds=0.8),
    ]
    titles = ["Chapter One", "Chapter Two: The Storm", "Épilogue"]
    pause = 0.5
    rendered = [
        render_book_part(
            master,
            normalization_gain_db(master),
            tmp_path / f"part-{index}.m4a",
            pause_after_ms=round(pause * 1000) if index < 2 else 0,
        )
        for index, master in enumerate(masters)
    ]
    assert {part.sample_rate for part in rendered} == {SAMPLE_RATE}
    events: list[tuple[str, int]] = []
    open_now: set[int] = set()

    def opener(index: int) -> Callable[[], AbstractContextManager[Path]]:
        @contextmanager
        def open_part() -> Iterator[Path]:
            assert not open_now, "a part was opened while another was still open"
            open_now.add(index)
            events.append(("enter", index))
            # Like a download: a private copy that is gone once the chapter is done.
            local = tmp_path / f"download-{index}.m4a"
            shutil.copyfile(rendered[index].path, local)
            try:
                yield local
            finally:
                local.unlink()
                open_now.discard(index)
                events.append(("exit", index))

        return open_part

    info = build_m4b(
        (BookPart(title, opener(index)) for index, title in enumerate(titles)),
        tmp_path / "book.m4b",
        title="The Book",
        metadata={"artist": "A. Writer"},
    )

    assert events == [
        ("enter", 0),
        ("exit", 0),
        ("enter", 1),
        ("exit", 1),
        ("enter", 2),
        ("exit", 2),
    ]
    # Each part is its chapter, its pause and one AAC priming frame (43 ms at 24 kHz).
    priming = 1024 / SAMPLE_RATE
    lengths = [part.duration_seconds + priming for part in rendered]
    starts = [0.0, lengths[0], lengths[0] + lengths[1]]
    total = sum(lengths)
    assert info.chapter_starts == pytest.approx(starts, abs=0.05)
    assert info.duration_seconds == pytest.approx(total, abs=0.05)
    assert info.bytes == info.path.stat().st_size

    markers = read_chapter_markers(info.path)
    assert [title for title, _, _ in markers] == titles
    assert [start for _, start, _ in markers] == pytest.approx(starts, abs=0.05)
    ends = [end for _, _, end in markers]
    assert ends == sorted(ends) and all(end > start for _, start, end in markers)
    assert ends[:-1] == pytest.approx(starts[1:], abs=0.05)
    assert ends[-1] == pytest.approx(total, abs=0.05)

    with av.open(str(info.path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac"
        assert container.metadata["title"] == "The Book"
        assert container.metadata["album"] == "The Book"
        assert container.metadata["artist"] == "A. Writer"
        assert float(stream.duration * stream.time_base) == pytest.approx(total, abs=0.05)
    # Every chapter came through at the target loudness, and the pauses are silent.
    samples, rate = _decode(info.path)
    for index, (start, end) in enumerate(zip(starts, [*starts[1:], total], strict=True)):
        chapter = samples[round(start * rate) : round(end * rate)]
        assert _loudness(chapter, rate) == pytest.approx(TARGET_LUFS, abs=0.5)
        if index < 2:
            gap = chapter[-round(0.4 * rate) :]
            assert np.abs(gap).max() < 0.01


def test_build_m4b_needs_a_chapter(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        build_m4b([], tmp_path / "empty.m4b", title="Nothing")
    assert not (tmp_path / "empty.m4b").exists()
