"""The audio half of an audiobook: speech segments into chapter masters, masters into
loudness-normalized deliverables (one file per chapter, or one .m4b with chapter marks).

Memory stays flat however long the book is: a segment (a few minutes of speech) is the
largest thing ever held as samples. Chapters are written to their master FLAC as they are
assembled, rendered by streaming the master through the gain into the encoder, and the
M4B is encoded chapter after chapter with only one master open at a time. The loudness
meter keeps one float per 100 ms of audio, not the audio.

Pipeline::

    segments --assemble_chapter--> ChapterMaster (mono s16 FLAC + loudness + peak)
    ChapterMaster --normalization_gain_db--> gain to TARGET_LUFS, capped by the peak ceiling
    ChapterMaster + gain --render_chapter--> mp3 | opus | aac | flac | wav
    [ChapterMaster + gain, ...] --build_m4b--> AAC .m4b with one chapter mark per chapter
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.container import OutputContainer
from scipy.signal import sosfilt

from worker.audio import _get_encoding, decode_to_pcm, output_rate
from worker.audio_join import fade_edges, trim_silence

__all__ = [
    "PEAK_CEILING_DBFS",
    "SAMPLE_RATE",
    "TARGET_LUFS",
    "ChapterMaster",
    "LoudnessMeter",
    "BookPart",
    "M4B_BITRATE",
    "M4bInfo",
    "RenderedAudio",
    "SegmentAudio",
    "assemble_chapter",
    "build_m4b",
    "normalization_gain_db",
    "read_chapter_markers",
    "render_chapter",
    "render_book_part",
]

SAMPLE_RATE = 24000  # the book's working rate
TARGET_LUFS = -18.0  # integrated loudness every chapter is normalized to
PEAK_CEILING_DBFS = -1.0  # the limiter keeps every sample below this
LIMIT_THRESHOLD_DBFS = -4.0  # where the limiter's soft knee begins
MAX_GAIN_DB = 30.0  # the most a chapter is raised

_FULL_SCALE = 32768.0  # s16 full scale: sample / _FULL_SCALE is in [-1, 1)
_MAX_FLOAT = 32767.0 / _FULL_SCALE  # the largest float that still fits s16 after scaling
_SILENCE_CHUNK_SECONDS = 1  # digital silence is written in chunks of at most this
M4B_BITRATE = 64_000  # AAC-LC mono for speech: about 29 MB an hour
_M4B_MUXER = "ipod"  # FFmpeg's iTunes flavour of MP4: writes QuickTime and Nero chapters
_M4B_BRAND = "M4B "  # major brand audiobook players look for (the muxer default is "M4A ")


@dataclass(frozen=True)
class SegmentAudio:
    """One synthesized piece of a chapter, on disk."""

    path: Path  # a decodable audio file (FLAC/WAV/MP3…, any rate, mono or stereo)
    pause_after_ms: int  # silence after this segment; ignored for the chapter's last segment


@dataclass(frozen=True)
class ChapterMaster:
    """A chapter's assembled audio, not normalized, and what was measured while writing it."""

    path: Path  # mono s16 FLAC at sample_rate, NOT normalized
    duration_seconds: float
    sample_rate: int
    loudness_lufs: float | None  # BS.1770 integrated loudness (gated); None if silent
    peak_dbfs: float  # sample peak re s16 full scale; -inf if every sample is 0


@dataclass(frozen=True)
class RenderedAudio:
    """A chapter encoded for delivery."""

    path: Path
    bytes: int
    duration_seconds: float  # the audio's own length, without the codec's padding
    sample_rate: int  # the rate it was encoded at (48000 for opus)


@dataclass(frozen=True)
class BookPart:
    """One chapter's part of an M4B (see `render_book_part`): its mark's title and how to
    get the part's file."""

    title: str
    open_part: Callable[[], AbstractContextManager[Path]]


@dataclass(frozen=True)
class M4bInfo:
    """The M4B written: size, length and where each chapter starts (seconds)."""

    path: Path
    bytes: int
    duration_seconds: float
    chapter_starts: tuple[float, ...]


class LoudnessMeter:
    """Streaming ITU-R BS.1770-4 integrated loudness of a mono signal.

    Feed float samples (full scale 1.0) in chunks of any size; the result does not depend
    on how the signal was cut. K-weighting is the standard pre-filter (high shelf) and RLB
    high-pass, computed for the meter's rate; 400 ms blocks overlap by 75% (a 100 ms hop);
    gating is absolute at -70 LUFS, then relative at -10 LU. Only whole blocks count, as
    the standard says. Memory: one float per hop, plus the filter state.
    """

    ABSOLUTE_GATE_LUFS = -70.0
    RELATIVE_GATE_LU = -10.0

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._sos = _k_weighting_sos(sample_rate)
        self._zi = np.zeros((len(self._sos), 2))  # filter state, carried between chunks
        self._hop = max(1, round(sample_rate * 0.1))
        self._partial_sum = 0.0  # energy of the hop being filled
        self._partial_count = 0
        self._recent = np.zeros(0)  # energies of the last (up to 3) whole hops
        self._block_energies = array("d")  # mean square of each 400 ms block

    def add(self, samples: np.ndarray) -> None:
        """Meter the next samples (floats, full scale 1.0)."""
        x = np.asarray(samples, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return
        filtered, self._zi = sosfilt(self._sos, x, zi=self._zi)
        squares = filtered * filtered
        need = self._hop - self._partial_count
        if squares.size < need:
            self._partial_sum += float(squares.sum())
            self._partial_count += squares.size
            return
        hops = [np.array([self._partial_sum + float(squares[:need].sum())])]
        rest = squares[need:]
        whole = rest.size // self._hop
        hops.append(rest[: whole * self._hop].reshape(whole, self._hop).sum(axis=1))
        tail = rest[whole * self._hop :]
        self._partial_sum, self._partial_count = float(tail.sum()), tail.size
        energies = np.concatenate([self._recent, *hops])
        if energies.size >= 4:
            # Each block is four consecutive hops: the 75% overlap of the standard.
            blocks = energies[:-3] + energies[1:-2] + energies[2:-1] + energies[3:]
            self._block_energies.extend(blocks / (4 * self._hop))
        self._recent = energies[-3:]

    def integrated_lufs(self) -> float | None:
        """Gated integrated loudness of everything added so far; None if nothing passes the
        absolute gate (silence, or less than one 400 ms block)."""
        z = np.frombuffer(self._block_energies, dtype=np.float64)
        z = z[z > _energy(self.ABSOLUTE_GATE_LUFS)]
        if z.size == 0:
            return None
        relative_gate = _lufs(float(z.mean())) + self.RELATIVE_GATE_LU
        z = z[z > _energy(relative_gate)]
        return _lufs(float(z.mean()))


def assemble_chapter(
    segments: Iterable[SegmentAudio],
    out_path: Path,
    *,
    sample_rate: int = SAMPLE_RATE,
    lead_ms: int = 300,
    tail_ms: int = 700,
) -> ChapterMaster:
    """Join a chapter's segments into a mono s16 FLAC master at `sample_rate`.

    Each segment is decoded, downmixed, resampled, trimmed of its own leading and trailing
    silence (keeping a short edge) and faded at both ends, then followed by exactly its
    `pause_after_ms` of digital silence, except the last. A segment that is silent
    throughout adds no audio; the pause before the next spoken segment is then the longest
    of the pauses waiting. `lead_ms` of silence opens the chapter and `tail_ms` closes it.
    Segments are read one at a time and the FLAC is written as they come; loudness and
    peak are measured on the way. Raises ValueError if `segments` is empty.
    """
    pending = iter(segments)
    first = next(pending, None)
    if first is None:
        raise ValueError("a chapter needs at least one segment")
    meter = LoudnessMeter(sample_rate)
    peak = 0
    total = 0
    pending_pause_ms: int | None = None  # the pause owed before the next spoken segment
    encoding = _get_encoding("flac")
    out_path = Path(out_path)
    try:
        with av.open(str(out_path), mode="w", format=encoding.container) as container:
            writer = _StreamEncoder(container, encoding.codec, sample_rate, sample_rate, "s16")

            def write(samples: np.ndarray) -> None:
                nonlocal total
                writer.write(samples)
                meter.add(samples / _FULL_SCALE)
                total += samples.size

            def write_silence(ms: int) -> None:
                for chunk in _silence(_ms_to_samples(ms, sample_rate), sample_rate, np.int16):
                    write(chunk)

            write_silence(lead_ms)
            for segment in itertools.chain([first], pending):
                # One segment (minutes at most) in memory at a time, never the chapter.
                pcm, _ = decode_to_pcm(Path(segment.path), sample_rate)
                speech = np.frombuffer(pcm, dtype="<i2")
                speech = fade_edges(trim_silence(speech, sample_rate), sample_rate)
                if speech.size == 0:
                    if pending_pause_ms is not None:
                        pending_pause_ms = max(pending_pause_ms, segment.pause_after_ms)
                    continue
                if pending_pause_ms is not None:
                    write_silence(pending_pause_ms)
                write(speech)
                peak = max(peak, int(np.abs(speech.astype(np.int32)).max()))
                pending_pause_ms = segment.pause_after_ms
            write_silence(tail_ms)
            writer.finish()
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    return ChapterMaster(
        path=out_path,
        duration_seconds=total / sample_rate,
        sample_rate=sample_rate,
        loudness_lufs=meter.integrated_lufs(),
        peak_dbfs=20 * math.log10(peak / _FULL_SCALE) if peak else -math.inf,
    )


def normalization_gain_db(master: ChapterMaster, *, target_lufs: float = TARGET_LUFS) -> float:
    """The gain that brings `master` to `target_lufs` (at most MAX_GAIN_DB, so a chapter of
    near silence is not blown up into noise); 0.0 for a silent chapter. Peaks the gain
    pushes too high are rounded off by the limiter in `_apply_gain`, not by less gain:
    capping the gain would leave peaky chapters quieter than the rest."""
    if master.loudness_lufs is None or not math.isfinite(master.peak_dbfs):
        return 0.0
    return min(target_lufs - master.loudness_lufs, MAX_GAIN_DB)


def render_chapter(
    master: ChapterMaster, gain_db: float, fmt: str, out_path: Path
) -> RenderedAudio:
    """Stream `master` through `gain_db` (clipped, never wrapped) into `out_path` encoded as
    `fmt` (mp3 | opus | aac | flac | wav), with worker.audio's muxer, codec and rate for it.
    Raises ValueError for another format."""
    encoding = _get_encoding(fmt)
    return _render(
        master,
        gain_db,
        out_path,
        muxer=encoding.container,
        codec=encoding.codec,
        out_rate=output_rate(fmt, master.sample_rate),
    )


def render_book_part(
    master: ChapterMaster,
    gain_db: float,
    out_path: Path,
    *,
    pause_after_ms: int = 0,
    bitrate: int = M4B_BITRATE,
    sample_rate: int = SAMPLE_RATE,
) -> RenderedAudio:
    """The chapter as its part of the book: AAC in MP4 at the book's rate and bitrate,
    through `gain_db`, followed by the `pause_after_ms` that comes after it in the book.
    Every part of a book must share `sample_rate` (a master at another rate is resampled).

    Made when the chapter is, on whichever worker assembles it, so the book itself is
    only a remux of its parts (`build_m4b`): encoding 18 hours of AAC in one task after
    the last chapter would add minutes to every long book."""
    return _render(
        master,
        gain_db,
        out_path,
        muxer=_M4B_MUXER,
        codec="aac",
        out_rate=output_rate("aac", sample_rate),
        bit_rate=bitrate,
        pause_after_ms=pause_after_ms,
    )


def _render(
    master: ChapterMaster,
    gain_db: float,
    out_path: Path,
    *,
    muxer: str,
    codec: str,
    out_rate: int,
    bit_rate: int | None = None,
    pause_after_ms: int = 0,
) -> RenderedAudio:
    out_path = Path(out_path)
    rate = master.sample_rate
    total = 0
    try:
        with av.open(str(out_path), mode="w", format=muxer) as container:
            writer = _StreamEncoder(container, codec, rate, out_rate, "flt", bit_rate=bit_rate)
            for block in _read_mono(master.path, rate):
                writer.write(_apply_gain(block, gain_db))
                total += block.size
            if total == 0:
                # PyAV writes the header with the first packet: there would be no file.
                raise ValueError(f"{master.path} holds no audio")
            for chunk in _silence(_ms_to_samples(pause_after_ms, rate), rate, np.float32):
                writer.write(chunk)
                total += chunk.size
            writer.finish()
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    return RenderedAudio(
        path=out_path,
        bytes=out_path.stat().st_size,
        duration_seconds=total / rate,
        sample_rate=out_rate,
    )


def build_m4b(
    parts: Iterable[BookPart],
    out_path: Path,
    *,
    title: str,
    metadata: Mapping[str, str] | None = None,
) -> M4bInfo:
    """Put the chapters' parts, in order, into one .m4b with a chapter mark for each.

    No audio is decoded or encoded: each part's AAC packets are copied into the book's one
    stream with timestamps that run on from the part before (every part was encoded with
    the same settings; its encoder's priming frame stays, 43 ms inside the chapter's
    opening silence). Each part is opened (`open_part`) and closed before the next, so
    memory stays flat. Marks are counted in samples at the stream's rate and written once
    all the packets are in: FFmpeg's MP4 muxer adds chapters given before the trailer, as
    a QuickTime chapter track and a Nero "chpl" list. The container's "title" and "album"
    are the book's title; `metadata` adds tags such as "artist" (and may set "album").
    Raises ValueError if there are no parts.
    """
    pending = iter(parts)
    first = next(pending, None)
    if first is None:
        raise ValueError("an M4B needs at least one chapter")
    out_path = Path(out_path)
    marks: list[tuple[str, int, int]] = []  # title, start, end in samples at `rate`
    total = 0
    rate = 0
    try:
        with av.open(
            str(out_path), mode="w", format=_M4B_MUXER, options={"brand": _M4B_BRAND}
        ) as container:
            container.metadata.update({"album": title, **(metadata or {}), "title": title})
            stream: av.audio.stream.AudioStream | None = None
            for part in itertools.chain([first], pending):
                start = total
                with part.open_part() as path, av.open(str(path), mode="r") as source:
                    source_stream = source.streams.audio[0]
                    if stream is None:
                        stream = container.add_stream_from_template(source_stream)
                        rate = source_stream.rate
                    elif source_stream.rate != rate:
                        raise ValueError(
                            f"{part.title!r} is at {source_stream.rate} Hz, not {rate}"
                        )
                    time_base = Fraction(1, rate)
                    for packet in source.demux(source_stream):
                        if packet.size == 0:
                            continue  # the demuxer's end-of-stream marker
                        duration = int(packet.duration or 1024)
                        packet.stream = stream
                        packet.time_base = time_base
                        packet.pts = packet.dts = total
                        packet.duration = duration
                        container.mux(packet)
                        total += duration
                marks.append((part.title, start, total))
            if total == 0:
                raise ValueError("the chapters hold no audio")
            container.set_chapters(
                [
                    {
                        "id": number,
                        "start": start,
                        "end": end,
                        "time_base": Fraction(1, rate),
                        "metadata": {"title": chapter_title},
                    }
                    for number, (chapter_title, start, end) in enumerate(marks, start=1)
                ]
            )
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    return M4bInfo(
        path=out_path,
        bytes=out_path.stat().st_size,
        duration_seconds=total / rate,
        chapter_starts=tuple(start / rate for _, start, _ in marks),
    )


def read_chapter_markers(path: Path) -> list[tuple[str, float, float]]:
    """The chapter marks of a media file as (title, start, end) in seconds, in order."""
    with av.open(str(path), mode="r", metadata_errors="ignore") as container:
        markers = []
        for chapter in container.chapters():
            time_base = chapter["time_base"] or Fraction(1, av.time_base)
            markers.append(
                (
                    chapter["metadata"].get("title", ""),
                    float(chapter["start"] * time_base),
                    float(chapter["end"] * time_base),
                )
            )
    return sorted(markers, key=lambda marker: marker[1])


class _StreamEncoder:
    """Encodes mono sample blocks, as they come, into a new audio stream of `container`.

    Blocks may have any length: PyAV's resampler converts them to the encoder's sample
    format and rate and cuts them into the fixed-size frames aac, mp3, opus and flac need.
    Every block must have the dtype of `in_format` ("s16": int16, "flt": float32).
    """

    def __init__(
        self,
        container: OutputContainer,
        codec: str,
        in_rate: int,
        out_rate: int,
        in_format: str,
        *,
        bit_rate: int | None = None,
    ) -> None:
        self._container = container
        self._stream = container.add_stream(codec, rate=out_rate, layout="mono")
        context = self._stream.codec_context
        if bit_rate is not None:
            context.bit_rate = bit_rate
        context.open()  # now frame_size is known
        self._resampler = av.AudioResampler(
            format=self._stream.format.name,
            layout="mono",
            rate=out_rate,
            frame_size=context.frame_size or None,
        )
        self._in_rate = in_rate
        self._in_format = in_format
        self._dtype = np.int16 if in_format == "s16" else np.float32
        self._pts = 0

    def write(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        data = np.ascontiguousarray(samples, dtype=self._dtype).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format=self._in_format, layout="mono")
        frame.sample_rate = self._in_rate
        # Continuous timestamps let the resampler stamp its frames, so packets get real pts.
        frame.pts = self._pts
        frame.time_base = Fraction(1, self._in_rate)
        self._pts += samples.size
        self._encode(self._resampler.resample(frame))

    def finish(self) -> None:
        """Flush the resampler (the last frame, padded) and the encoder's delayed packets."""
        self._encode(self._resampler.resample(None))
        self._container.mux(self._stream.encode(None))

    def _encode(self, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            self._container.mux(self._stream.encode(frame))


def _read_mono(path: Path, rate: int) -> Iterator[np.ndarray]:
    """The first audio stream of `path` as float32 mono blocks at `rate`, frame by frame."""
    with av.open(str(path), mode="r", metadata_errors="ignore") as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                yield out.to_ndarray().reshape(-1)
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1)


def _apply_gain(block: np.ndarray, gain_db: float) -> np.ndarray:
    """Gain, then a soft limiter: below LIMIT_THRESHOLD_DBFS samples pass unchanged; above
    it they bend smoothly (tanh, slope 1 at the knee) towards PEAK_CEILING_DBFS, which they
    never reach. Sample by sample, so it streams; speech peaks are short, so the loudness
    barely moves."""
    gained = block * np.float32(10 ** (gain_db / 20)) if gain_db else block
    knee = np.float32(10 ** (LIMIT_THRESHOLD_DBFS / 20))
    room = np.float32(10 ** (PEAK_CEILING_DBFS / 20)) - knee
    magnitude = np.abs(gained)
    over = magnitude > knee
    if over.any():
        gained = gained.copy()
        bent = knee + room * np.tanh((magnitude[over] - knee) / room)
        gained[over] = np.sign(gained[over]) * bent
    return np.clip(gained, -1.0, _MAX_FLOAT).astype(np.float32, copy=False)


def _silence(samples: int, rate: int, dtype: type[np.generic]) -> Iterator[np.ndarray]:
    """`samples` zeros, in chunks of at most a second: a long pause never needs a big array."""
    chunk = rate * _SILENCE_CHUNK_SECONDS
    while samples > 0:
        size = min(chunk, samples)
        yield np.zeros(size, dtype=dtype)
        samples -= size


def _ms_to_samples(ms: int, rate: int) -> int:
    if ms < 0:
        raise ValueError(f"a duration cannot be negative: {ms} ms")
    return round(rate * ms / 1000)


def _k_weighting_sos(rate: int) -> np.ndarray:
    """BS.1770's two K-weighting biquads for `rate`, as second-order sections.

    The coefficients are the analogue prototypes' bilinear transforms (the formulas
    libebur128 and pyloudnorm use), so at 48 kHz they match the standard's table and any
    other rate gets the same response.
    """
    # Stage 1: high shelf, about +4 dB above 2 kHz (the head's acoustic effect).
    f0 = 1681.974450955533
    gain_db = 3.999843853973347
    q = 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [
        (vh + vb * k / q + k * k) / a0,
        2 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2 * (k * k - 1) / a0,
        (1 - k / q + k * k) / a0,
    ]
    # Stage 2: the RLB high-pass at about 38 Hz.
    f0 = 38.13547087602444
    q = 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, highpass])


def _lufs(energy: float) -> float:
    return -0.691 + 10 * math.log10(energy)


def _energy(lufs: float) -> float:
    return 10 ** ((lufs + 0.691) / 10)
