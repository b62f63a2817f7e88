"""Audiobook throughput and memory: a whole book through `POST /v1/audiobooks`, against a
fake provider with a fixed latency L and a deployment cap C.

- Stack (production shape): PostgreSQL (a fresh database), Redis (db `--redis-db`, 10),
  storage a local folder (`--storage s3`: a moto server), `speechq api`, and a dedicated
  audiobook worker: `speechq worker --queues audiobook --pool threads --concurrency C+2`
  (C threads for the segments, two more for the chapter and book assemblies, which run on
  the same queue). The worker is started afresh for each book, so its peak RSS (VmHWM) is
  that book's alone.
- Provider: the fake OpenAI-compatible TTS server of `_stack.py`, threaded, answering each
  `POST /v1/audio/speech` after L seconds (`--latency`, 3.0) with `--tone-seconds` (0.5)
  of a 440 Hz tone (for `response_format: pcm`, what the worker asks for: raw s16le mono
  24 kHz). One deployment `openai/tts-1` (model `fake-tts`) with `audiobook_concurrency: C`
  (`--concurrency`, 16), so the API keeps at most C segments in flight.
- Book: `--sizes` (100,000 and 1,000,000) characters of generated English-like text (a
  fixed seed per size, every paragraph different, so the segment cache never hits), in
  `--chapters` (20) chapters of paragraphs of 1,000-3,000 characters: one paragraph is one
  segment (under the OpenAI adapter's 4,096-character limit). `read_titles: false`,
  `response_format: mp3`. The segment count is the API's `progress.segments_total`.
- Ideal: segments x L / C. Baseline in the same run: the same number of bare `sleep(L)`
  calls through a `ThreadPoolExecutor(C)` (ceil(segments / C) x L, plus the pool's cost).
- Measured: wall time from just before the POST to the book's `finished_at` (the status is
  polled from the database every 0.2 s, so polling does not load the API; the end is the
  worker's own timestamp), split into: the submit (POST -> 202), the start (-> the first
  provider request), synthesis (-> the last segment stored and billed: its usage row), and
  the assembly tail (-> every chapter assembled, -> the M4B stored and the book
  `succeeded`); and wall - ideal taken apart: rounding to whole waves (baseline - ideal),
  the start, synthesis beyond the baseline, the tail. From the fake's own log of request
  start/end times: the mean and the most provider requests in flight (C at best, and at
  most) and what that leaves per segment as the time a slot spends outside the provider
  call (the worker's own per-segment cost, queue hops included). CPU per segment by
  process group (`CpuMeter`), PostgreSQL transactions per segment (`pg_stat_database`).
  The worker's RSS, sampled every 50 ms (idle before the POST; peak during synthesis; peak
  during the tail; at each tenth of the run), and its VmHWM (the kernel's exact peak).
- `--worker-env NAME=VALUE` sets a variable for the worker only (e.g. MALLOC_ARENA_MAX=2);
  `--py-spy PATH` records the worker with py-spy (wall clock, idle threads included, raw
  collapsed stacks) into `--profile-dir`.

Audio: each segment is `--tone-seconds` of tone, so a book of S segments is about
S x (tone + 0.6 s paragraph pause) + 2 s per chapter long, minutes, not the hours real
speech would be: the encoding of real-length audio is not part of the wall time here
(the M4B encode rate measured in the tail says what it would add).

    .venv/bin/python bench/audiobook.py [--sizes 100000,1000000] [--latency 3]
        [--concurrency 16] [--tone-seconds 0.5] [--chapters 20] [--storage file|s3]
        [--worker-env NAME=VALUE] [--py-spy PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
from celery import Celery

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from _stack import (  # noqa: E402
    CpuMeter,
    Procs,
    Stack,
    describe_run,
    fake_provider_stats,
    fake_tts_config,
    run_main,
    start_fake_provider,
    start_s3,
)

TARGET_RATIO = 1.10
TARGET_RSS_MB = 300.0
POLL_S = 0.2
RSS_SAMPLE_S = 0.05
WORKER_NAME = "audiobook-worker"
MODEL = "fake-tts"
PARAGRAPH_CHARS = (1000, 3000)

# --- the book ---------------------------------------------------------------------------

_WORDS = (
    "the of and to in was he that it his her you as had with for she not at but be my on "
    "have him is said me which by so this all from they no were if would or when what "
    "there been one could very an who them do we any more their little about than into "
    "some then out up time made should well must before such only other upon our over "
    "old house day night long away again never through great good down door light hand "
    "eyes face water river road town garden window morning evening letter voice silence "
    "winter summer field stone bread fire table chair friend mother father brother sister "
    "child story journey question answer reason moment morning dream memory country "
    "city ship harbour mountain forest valley bridge station market kitchen library "
    "walked looked turned opened closed waited listened remembered wondered believed "
    "carried followed answered smiled laughed whispered returned promised discovered "
    "quiet bright cold warm dark early late gentle strange careful patient sudden slow "
    "quickly slowly softly almost perhaps together already always sometimes nearly"
).split()


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 20))]
    if len(words) > 9 and rng.random() < 0.5:
        cut = rng.randint(3, len(words) - 4)
        words[cut] += ","
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice(".....?!")


def _paragraph(rng: random.Random, target: int) -> str:
    sentences: list[str] = []
    length = -1
    while length < target:
        sentence = _sentence(rng)
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)


def make_book(characters: int, chapters: int, seed: int) -> list[dict[str, str]]:
    """About `characters` characters of text in `chapters` chapters of paragraphs of
    1,000-3,000 characters (the last of a chapter may be shorter), blank-line separated."""
    rng = random.Random(seed)
    per_chapter = characters / chapters
    book: list[dict[str, str]] = []
    for number in range(chapters):
        paragraphs: list[str] = []
        length = 0
        while length < per_chapter - 200:
            target = min(rng.randint(*PARAGRAPH_CHARS), max(200, int(per_chapter - length)))
            paragraph = _paragraph(rng, target)
            paragraphs.append(paragraph)
            length += len(paragraph) + 2
        book.append({"title": f"Chapter {number + 1}", "text": "\n\n".join(paragraphs)})
    return book


# --- memory of the worker ----------------------------------------------------------------


def _group_pids(pgid: int) -> list[int]:
    """The processes of process group `pgid` (the worker and any child it forked)."""
    pids: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[2]) == pgid:
            pids.append(int(entry))
    return pids


def _status_kb(pid: int, fields: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name in fields:
                    out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


class RssSampler(threading.Thread):
    """Samples the summed VmRSS of a process group every RSS_SAMPLE_S, with the time."""

    def __init__(self, pgid: int) -> None:
        super().__init__(daemon=True)
        self.pgid = pgid
        self.samples: list[tuple[float, int]] = []  # (wall-clock time, kB)
        self._halt = threading.Event()
        self._pids = _group_pids(pgid)
        self._refreshed = time.monotonic()

    def rss_kb(self) -> int:
        if time.monotonic() - self._refreshed > 1.0:
            self._pids = _group_pids(self.pgid) or self._pids
            self._refreshed = time.monotonic()
        return sum(_status_kb(pid, ("VmRSS",)).get("VmRSS", 0) for pid in self._pids)

    def run(self) -> None:
        while not self._halt.wait(RSS_SAMPLE_S):
            self.samples.append((time.time(), self.rss_kb()))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def peak_mb(self, start: float, end: float) -> float:
        inside = [kb for t, kb in self.samples if start <= t <= end]
        return max(inside, default=0) / 1024

    def timeline_mb(self, start: float, end: float, points: int = 10) -> list[float]:
        """The sampled RSS at `points` evenly spaced times from `start` to `end`."""
        out: list[float] = []
        for n in range(points + 1):
            at = start + (end - start) * n / points
            before = [kb for t, kb in self.samples if t <= at]
            out.append((before[-1] if before else self.samples[0][1] if self.samples else 0) / 1024)
        return out

    def hwm_mb(self) -> float:
        """The kernel's peak RSS (VmHWM), summed over the group's processes."""
        pids = _group_pids(self.pgid) or self._pids
        return sum(_status_kb(pid, ("VmHWM",)).get("VmHWM", 0) for pid in pids) / 1024


# --- one book ----------------------------------------------------------------------------


@dataclass
class BookRun:
    characters_asked: int
    book_id: str = ""
    status: str = ""
    characters: int = 0
    chapters: int = 0
    segments: int = 0
    t_post: float = 0.0
    t_accepted: float = 0.0
    t_first_request: float = float("nan")
    t_last_request_end: float = float("nan")
    t_last_segment: float = float("nan")  # the last usage row: segment stored and billed
    t_chapters_done: float = float("nan")  # polled: every chapter assembled
    t_finished: float = float("nan")
    polls: int = 0
    provider_requests: int = 0
    provider_busy_s: float = 0.0  # sum of the provider requests' durations
    provider_mean_s: float = 0.0
    # Transactions committed in the book's database from the POST to the end, less this
    # script's own (its polls: one per statement), set in `count_commits`.
    pg_commits: int = 0
    provider_max_in_flight: int = 0
    segment_runs_over_1: int = 0
    usage_rows: int = 0
    audio_seconds: float = 0.0
    m4b_bytes: int = 0
    rss_idle_mb: float = 0.0
    rss_synthesis_mb: float = 0.0
    rss_tail_mb: float = 0.0
    rss_timeline_mb: list[float] = field(default_factory=list)
    hwm_mb: float = 0.0
    cpu_report: str = ""
    baseline_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        return self.t_finished - self.t_post

    def ideal_s(self, latency_s: float, concurrency: int) -> float:
        return self.segments * latency_s / concurrency


def _epoch(value: datetime | None) -> float:
    if value is None:
        return float("nan")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _commits(conn: psycopg.Connection[Any]) -> int:
    """Transactions committed so far in the connection's database. PostgreSQL's counter
    lags: a backend reports within a second of a commit, an idle one within 10 s, one that
    exits at once, so read it once the worker is gone and 10 s later."""
    row = conn.execute(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _poll_book(
    conn: psycopg.Connection[Any], book_id: str, run: BookRun, deadline: float
) -> tuple[str, float]:
    """Poll the database until the book is terminal; note when its chapters were all done.
    Returns its status and `finished_at`."""
    while time.monotonic() < deadline:
        run.polls += 1
        row = conn.execute(
            "SELECT status, finished_at FROM audiobooks WHERE id = %s", (book_id,)
        ).fetchone()
        assert row is not None
        status, finished_at = row
        chapter_states = conn.execute(
            "SELECT status, count(*) FROM audiobook_chapters WHERE book_id = %s GROUP BY status",
            (book_id,),
        ).fetchall()
        if math.isnan(run.t_chapters_done) and {s for s, _ in chapter_states} == {"succeeded"}:
            run.t_chapters_done = time.time()
        if status in ("succeeded", "failed", "canceled"):
            return status, _epoch(finished_at)
        time.sleep(POLL_S)
    raise TimeoutError(f"the book {book_id} did not end in time")


def run_book(
    stack: Stack,
    provider_port: int,
    characters: int,
    args: argparse.Namespace,
    cpu: CpuMeter,
) -> BookRun:
    run = BookRun(characters_asked=characters)
    chapters = make_book(characters, args.chapters, seed=characters)
    body = {
        "title": f"Benchmark book of {characters:,} characters",
        "model": MODEL,
        "chapters": chapters,
        "read_titles": False,
        "response_format": "mp3",
    }
    sampler = RssSampler(stack.procs.pid(WORKER_NAME))
    time.sleep(1.0)  # the worker's idle RSS, after its start-up
    run.rss_idle_mb = sampler.rss_kb() / 1024
    sampler.start()
    profiler: subprocess.Popen[bytes] | None = None
    if args.py_spy:
        # Wall-clock samples of every worker thread, idle ones included: where a segment's
        # time goes, waits on PostgreSQL and the GIL as well as CPU.
        out = Path(args.profile_dir) / f"worker-{characters}.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        profiler = subprocess.Popen(
            [args.py_spy, "record", "--pid", str(stack.procs.pid(WORKER_NAME)), "--idle"]
            + ["--nonblocking"]
            + ["--threads", "--rate", "50", "--format", "raw", "--output", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + args.timeout
    try:
        with (
            psycopg.connect(stack.psycopg_url, autocommit=True) as conn,
            httpx.Client(base_url=stack.api_url, headers=stack.headers, timeout=120.0) as client,
            cpu.measure(),
        ):
            commits0 = _commits(conn)
            run.t_post = time.time()
            response = client.post("/v1/audiobooks", json=body)
            run.t_accepted = time.time()
            if response.status_code != 202:
                raise RuntimeError(f"POST /v1/audiobooks: {response.status_code} {response.text}")
            accepted = response.json()
            run.book_id = accepted["id"]
            run.segments = accepted["progress"]["segments_total"]
            run.chapters = accepted["progress"]["chapters_total"]
            run.status, run.t_finished = _poll_book(conn, run.book_id, run, deadline)
            run.pg_commits = -commits0
        time.sleep(0.2)
    finally:
        sampler.stop()
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            try:
                profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()
    run.hwm_mb = sampler.hwm_mb()
    run.cpu_report = cpu.report(max(1, run.segments), "segment")

    # The book through the API, as a client sees it.
    with httpx.Client(base_url=stack.api_url, headers=stack.headers, timeout=60.0) as client:
        book = client.get(f"/v1/audiobooks/{run.book_id}").json()
    run.characters = sum(c["characters"] for c in book["chapters"])
    if book["status"] != run.status:
        run.notes.append(f"API says {book['status']}, database said {run.status}")
    if book.get("result"):
        run.audio_seconds = float(book["result"]["duration_seconds"])
        run.m4b_bytes = int(book["result"]["bytes"])
    if book.get("error"):
        run.notes.append(f"error: {book['error']}")

    with psycopg.connect(stack.psycopg_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), max(created_at) FROM usage_records WHERE audiobook_id = %s",
            (run.book_id,),
        ).fetchone()
        assert row is not None
        run.usage_rows, run.t_last_segment = int(row[0]), _epoch(row[1])
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE runs > 1) FROM audiobook_segments WHERE book_id = %s",
            (run.book_id,),
        ).fetchone()
        assert row is not None
        run.segment_runs_over_1 = int(row[0])

    requests = [(a, b) for a, b in fake_provider_stats(provider_port) if a >= run.t_post]
    if requests:
        run.provider_requests = len(requests)
        run.t_first_request = min(a for a, _ in requests)
        run.t_last_request_end = max(b for _, b in requests)
        run.provider_busy_s = sum(b - a for a, b in requests)
        run.provider_mean_s = run.provider_busy_s / len(requests)
        # The most requests in flight at once: the deployment's cap must hold (<= C).
        edges = sorted([(a, 1) for a, _ in requests] + [(b, -1) for _, b in requests])
        level = 0
        for _, step in edges:
            level += step
            run.provider_max_in_flight = max(run.provider_max_in_flight, level)
    synthesis_end = run.t_last_segment if not math.isnan(run.t_last_segment) else run.t_post
    run.rss_synthesis_mb = sampler.peak_mb(run.t_post, synthesis_end)
    run.rss_tail_mb = sampler.peak_mb(synthesis_end, run.t_finished + 0.2)
    run.rss_timeline_mb = sampler.timeline_mb(run.t_post, run.t_finished)
    return run


def count_commits(stack: Stack, run: BookRun) -> None:
    """Finish `run.pg_commits`: called once the worker has stopped and 10 s have passed."""
    with psycopg.connect(stack.psycopg_url, autocommit=True) as conn:
        # The polls (2 statements each), and the 3 statements after the end.
        run.pg_commits += _commits(conn) - 2 * run.polls - 3


def sleep_baseline(count: int, latency_s: float, concurrency: int) -> float:
    """`count` bare sleep(L) through a ThreadPoolExecutor(C): the ideal, measured here."""
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: time.sleep(latency_s), range(count)))
    return time.perf_counter() - started


def wait_worker_ready(stack: Stack, timeout_s: float = 60.0) -> None:
    """Until the worker answers a remote-control ping (it consumes its queue by then)."""
    app = Celery("speechq_bench_ping", broker=stack.broker_url)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            stack.procs.check_alive(WORKER_NAME)
            if app.control.ping(timeout=1.0):
                return
        raise TimeoutError(f"the worker did not answer a ping:\n{stack.procs.tail(WORKER_NAME)}")
    finally:
        app.close()


# --- report ------------------------------------------------------------------------------


def _s(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def report(runs: list[BookRun], args: argparse.Namespace) -> None:
    latency, conc = args.latency, args.concurrency
    print()
    print(
        f"Time (L = {latency:g} s per provider request, C = {conc} concurrent segments; "
        f"ideal = segments x L / C; baseline = segments x sleep(L) in ThreadPoolExecutor(C))"
    )
    head = (
        f"{'characters':>11}{'chapters':>9}{'segments':>9}{'ideal s':>9}{'baseline s':>11}"
        f"{'wall s':>8}{'wall/ideal':>11}{'wall/base':>10}{'submit s':>9}{'start s':>8}"
        f"{'synth s':>8}{'chapters s':>11}{'m4b s':>7}{'aim':>6}"
    )
    print(head)
    for r in runs:
        ideal = r.ideal_s(latency, conc)
        ratio = r.wall_s / ideal if ideal else float("nan")
        print(
            f"{r.characters:>11,}{r.chapters:>9}{r.segments:>9}{ideal:>9.1f}{r.baseline_s:>11.1f}"
            f"{_s(r.wall_s):>8}{ratio:>11.3f}{r.wall_s / r.baseline_s:>10.3f}"
            f"{r.t_accepted - r.t_post:>9.2f}{_s(r.t_first_request - r.t_post):>8}"
            f"{_s(r.t_last_segment - r.t_post):>8}"
            f"{_s(r.t_chapters_done - r.t_last_segment):>11}"
            f"{_s(r.t_finished - r.t_chapters_done):>7}"
            f"{'met' if ratio <= TARGET_RATIO else 'NOT':>6}"
        )
    print(
        "  submit: POST -> 202; start: POST -> first provider request; synth: POST -> last "
        "segment stored; chapters: -> every chapter assembled (polled, +-0.2 s); m4b: -> "
        "book succeeded"
    )
    print()
    print("Provider side (the fake's own request log) and the worker's cost per segment")
    print(
        f"{'characters':>11}{'requests':>9}{'mean req s':>11}{'in flight':>10}{'max':>5}"
        f"{'slot idle/seg s':>16}{'runs>1':>7}{'usage rows':>11}{'audio s':>9}{'m4b MB':>8}"
    )
    for r in runs:
        span = r.t_last_request_end - r.t_first_request
        in_flight = r.provider_busy_s / span if span > 0 else float("nan")
        idle = (span * conc - r.provider_busy_s) / r.provider_requests if r.provider_requests else 0
        print(
            f"{r.characters:>11,}{r.provider_requests:>9}{r.provider_mean_s:>11.3f}"
            f"{in_flight:>10.2f}{r.provider_max_in_flight:>5}{idle:>16.3f}{r.segment_runs_over_1:>7}{r.usage_rows:>11}"
            f"{r.audio_seconds:>9.0f}{r.m4b_bytes / 1e6:>8.2f}"
        )
    print(
        "  in flight: mean provider requests in flight from the first request to the last "
        f"one's end (C = {conc} at best), max: the most at once; slot idle/seg: (span x C - "
        "sum of request times) / requests, the time a slot spends outside a provider call per "
        "segment"
    )
    print()
    print(
        f"Memory of the audiobook worker (one process, --pool threads --concurrency {conc + 2}); "
        f"aim: <= {TARGET_RSS_MB:.0f} MB and about the same for both sizes"
    )
    print(
        f"{'characters':>11}{'idle MB':>9}{'peak synthesis MB':>19}{'peak tail MB':>14}"
        f"{'VmHWM MB':>10}{'aim':>6}"
    )
    for r in runs:
        print(
            f"{r.characters:>11,}{r.rss_idle_mb:>9.1f}{r.rss_synthesis_mb:>19.1f}"
            f"{r.rss_tail_mb:>14.1f}{r.hwm_mb:>10.1f}"
            f"{'met' if r.hwm_mb <= TARGET_RSS_MB else 'NOT':>6}"
        )
    print(
        f"  RSS sampled every {RSS_SAMPLE_S * 1000:.0f} ms; tail: from the last segment stored "
        "to the book's end (the last chapter's assembly and the M4B); VmHWM: the kernel's peak"
    )
    print()
    for r in runs:
        print(f"{r.characters:,} characters ({r.book_id}, {r.status}): {r.cpu_report}")
        print(
            f"  PostgreSQL: {r.pg_commits / max(1, r.segments):.1f} transactions per segment "
            f"({r.pg_commits:,} in all, API and worker)"
        )
        ideal = r.ideal_s(args.latency, args.concurrency)
        synthesis = r.t_last_request_end - r.t_first_request
        print(
            f"  wall {r.wall_s:.1f} s = ideal {ideal:.1f} + rounding to whole waves "
            f"{r.baseline_s - ideal:.1f} (baseline - ideal) + start "
            f"{r.t_first_request - r.t_post:.1f} (POST -> first provider request) + synthesis "
            f"beyond the baseline {synthesis - r.baseline_s:.1f} (first request -> last "
            f"request's end, less the baseline) + tail {r.t_finished - r.t_last_request_end:.1f} "
            "(-> succeeded)"
        )
        steps = " ".join(f"{mb:.0f}" for mb in r.rss_timeline_mb)
        print(f"  worker RSS MB from the POST to the end, in tenths of the wall time: {steps}")
        if r.audio_seconds and not math.isnan(r.t_chapters_done):
            m4b_s = r.t_finished - r.t_chapters_done
            print(
                f"  M4B of {r.audio_seconds:.0f} s of audio built in ~{m4b_s:.1f} s "
                f"(~{r.audio_seconds / max(m4b_s, 1e-3):.0f}x real time, polling included)"
            )
        for note in r.notes:
            print(f"  note: {note}")


# --- main --------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="book sizes in characters")
    parser.add_argument("--latency", type=float, default=3.0, help="L: seconds per request")
    parser.add_argument("--concurrency", type=int, default=16, help="C: audiobook_concurrency")
    parser.add_argument("--tone-seconds", type=float, default=0.5, help="audio per segment")
    parser.add_argument("--chapters", type=int, default=20)
    parser.add_argument("--storage", choices=["file", "s3"], default="file")
    parser.add_argument("--loglevel", default="WARNING")
    parser.add_argument("--redis-db", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per book")
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the audiobook worker only (repeatable)",
    )
    parser.add_argument("--py-spy", metavar="PATH", help="profile the worker with this py-spy")
    parser.add_argument("--profile-dir", default="bench-profiles", help="where profiles go")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    worker_env = dict(item.split("=", 1) for item in args.worker_env)

    print(describe_run())
    print(
        f"L = {args.latency:g} s, C = {args.concurrency}, worker --pool threads --concurrency "
        f"{args.concurrency + 2}, {args.tone_seconds:g} s of tone per segment, "
        f"storage {args.storage}, sizes {', '.join(f'{s:,}' for s in sizes)}"
        + (f", worker env {worker_env}" if worker_env else "")
    )
    runs: list[BookRun] = []
    with contextlib.ExitStack() as cleanup:
        tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="speechq-bench-")))
        procs = Procs(tmp)
        cleanup.callback(procs.stop_all)
        port = start_fake_provider(procs, latency_s=args.latency, tone_seconds=args.tone_seconds)
        extra_env = {"SPEECHQ_LOG_LEVEL": args.loglevel}
        storage_url = None
        if args.storage == "s3":
            s3_url, aws = start_s3(procs, tmp)
            storage_url = "s3://speechq-bench/bench"
            extra_env |= aws | {"SPEECHQ_S3_ENDPOINT_URL": s3_url}
        config = fake_tts_config(tmp / "config.yaml", port, audiobook_concurrency=args.concurrency)
        stack = Stack(
            redis_db=args.redis_db,
            config_path=config,
            storage_url=storage_url,
            extra_env=extra_env,
            label="audiobook",
        )
        cleanup.enter_context(stack)
        stack.start_api()
        cpu_procs = (stack.procs, procs)
        for size in sizes:
            stack.start_worker(
                args.concurrency + 2,
                queues="audiobook",
                pool="threads",
                name=WORKER_NAME,
                env=worker_env,
            )
            wait_worker_ready(stack)
            print(f"\n{size:,} characters: submitting…", flush=True)
            run = run_book(stack, port, size, args, CpuMeter(*cpu_procs))
            stack.procs.stop(WORKER_NAME)
            run.baseline_s = sleep_baseline(run.segments, args.latency, args.concurrency)
            time.sleep(max(0.0, 11.0 - run.baseline_s))
            count_commits(stack, run)
            print(
                f"  {run.status} in {run.wall_s:.1f} s: {run.segments} segments, ideal "
                f"{run.ideal_s(args.latency, args.concurrency):.1f} s, baseline "
                f"{run.baseline_s:.1f} s; worker VmHWM {run.hwm_mb:.0f} MB",
                flush=True,
            )
            runs.append(run)
    report(runs, args)
    return 0 if all(r.status == "succeeded" for r in runs) else 1


if __name__ == "__main__":
    run_main(main)
