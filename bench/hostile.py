"""Hostile input: what the hostile corpus costs the API, and what it does to normal submits.

For each stack, the embedded default (SQLite) and then the production shape (PostgreSQL +
Redis db 11; `--no-production` skips it), `speechq api` runs as 1 process with no worker
and the model `fake-tts` configured (nothing calls its provider). Then:

1. baseline: normal submits alone (`POST /v1/jobs/speech` with a small valid body, 4
   closed-loop clients, `--baseline` 500 requests after 100 of warm-up, the master key);
2. the attack: the hostile corpus, one request at a time from a thread, each kind
   `--count` (5) times, while the same normal submits run in blocks of 40 until it ends.

The corpus, every request over a raw socket to 127.0.0.1 and bounded by `--timeout` (30 s):

- `json 300MB no key`: `POST /v1/jobs/speech` declaring `Content-Length: 300000000`, the
  body sent in 1 MB pieces until the server answers or closes (sending stops at the first
  byte of an answer); expected 401 before the body is read;
- `json 300MB key`: the same with the master key; expected 413 `request_too_large`
  (`SPEECHQ_MAX_JSON_BODY_MB`, 16);
- `json chunked key`: the same with the key, `Transfer-Encoding: chunked` (no length);
  expected 413 `request_too_large` once 16 MB are read;
- `epub zip bomb`: `POST /v1/audiobooks/quote`, multipart `file`: a minimal EPUB (mimetype
  stored first, container, OPF, one chapter) plus a second XHTML chapter of 1 GiB of
  repeated text ("ha ha ha") deflated at level 9 (a ~1 MB file, built once by streaming
  into zipfile, cached in `$TMPDIR/speechq-bench-hostile/`); expected 413
  `request_too_large`;
- `txt 5M paragraph` / `txt 6M paragraph`: a .txt of 5,000,000 / 6,000,000 characters of
  words with no blank line and no sentence end, to the quote; expected a 200 quote or a
  400 quickly / 400 `input_too_long`;
- `deep json speech` / `deep json audiobook`: `[` x 100,000 then `]` x 100,000 to
  `POST /v1/jobs/speech` / `POST /v1/audiobooks`; expected 400.

Measured per stack: the API process's peak RSS growth over its RSS before the attack
(VmRSS every 20 ms, `upload_memory.RssSampler`, per hostile request), and the peak RSS of
its child processes (the book readers, VmHWM); the CPU of the API and its children
(/proc/<pid>/stat utime+stime) per hostile request, less the normal submits answered in
the same window at their baseline CPU cost; normal submit p50/p99 without and with the
attack (the submits sent while it ran) and the p99 ratio.

Guards, so that a server without the fixes cannot take the machine or the run with it:
a kind stops after a request slower than 10 s; a request that gets no answer within
`--timeout`, or during which the API's RSS grows past `--rss-guard-mb` (3000), ends with
the API killed (SIGKILL to the process group this script started) and started again; its
CPU is then a lower bound, marked `>=`.

Aims (issue "Safe on an open network"): RSS growth <= 50 MB, no hostile request over 2 s
of CPU, normal p99 within 2x. This prints figures; it asserts nothing.

    .venv/bin/python bench/hostile.py [--count 5] [--timeout 30] [--no-production]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import select
import signal
import socket
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from _stack import (  # noqa: E402
    SPEECH_BODY,
    LoadResult,
    Stack,
    describe_run,
    fake_tts_config,
    free_port,
    quantiles_ms,
    run_load,
    run_main,
)
from upload_memory import RssSampler, rss_bytes  # noqa: E402

MB = 1_000_000
MiB = 1 << 20
DECLARED_BYTES = 300 * MB
BOMB_EXPANDED_BYTES = 1 << 30
PARAGRAPH_CHARS = (5_000_000, 6_000_000)
DEPTH = 100_000
NORMAL_CLIENTS = 4
WARMUP_REQUESTS = 100
BLOCK_REQUESTS = 40
MAX_NORMAL_DURING_ATTACK = 20_000
SLOW_S = 10.0
AIM_RSS_BYTES = 50 * MB
AIM_CPU_S = 2.0
AIM_P99_RATIO = 2.0
REDIS_DB = 11
CACHE_DIR = Path(tempfile.gettempdir()) / "speechq-bench-hostile"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def descendants(pid: int) -> list[int]:
    """The live processes under `pid` (the API's book processes among them)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                children.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
            except (OSError, IndexError):
                continue
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def proc_cpu_s(pid: int) -> float:
    """utime + stime so far, in seconds, of `pid` and every live process under it: the
    API reads and plans books in child processes, whose CPU counts as the request's."""
    total = 0
    for member in (pid, *descendants(pid)):
        try:
            fields = _stat_fields(member)
        except OSError:
            continue  # ended meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK


def children_peak_rss(pid: int) -> int:
    """The largest peak RSS (VmHWM) among the processes under `pid`, in bytes."""
    peaks = [0]
    for child in descendants(pid):
        try:
            peaks.append(rss_bytes(child, "VmHWM"))
        except (OSError, RuntimeError):
            continue
    return max(peaks)


# --- the corpus -------------------------------------------------------------------------

EPUB_MIMETYPE = b"application/epub+zip"
CONTAINER_XML = b"""<?xml version="1.0" encoding="utf-8"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles>
    <rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>
  </rootfiles>
</container>
"""
CONTENT_OPF = b"""<?xml version="1.0" encoding="utf-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
    <dc:identifier id="id">speechq-bench-hostile</dc:identifier>
    <dc:title>Hostile</dc:title>
    <dc:language>en</dc:language>
  </metadata>
  <manifest>
    <item id="c1" href="chapter1.xhtml" media-type="application/xhtml+xml"/>
    <item id="c2" href="chapter2.xhtml" media-type="application/xhtml+xml"/>
  </manifest>
  <spine>
    <itemref idref="c1"/>
    <itemref idref="c2"/>
  </spine>
</package>
"""
XHTML_HEAD = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b'<html xmlns="http://www.w3.org/1999/xhtml"><head><title>%s</title></head><body>\n'
)
XHTML_TAIL = b"\n</body></html>\n"


def epub_bomb(expanded_bytes: int = BOMB_EXPANDED_BYTES) -> bytes:
    """A minimal EPUB whose second chapter inflates to `expanded_bytes` of repeated text;
    streamed into the zip 1 MiB at a time, cached in CACHE_DIR."""
    path = CACHE_DIR / f"bomb-{expanded_bytes}.epub"
    if not path.exists():
        CACHE_DIR.mkdir(exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.part")
        # A period of 3 bytes: every deflate match then has a distance without extra bits,
        # so 258 bytes cost ~2 bits (~1000:1).
        phrase = b"ha "
        chunk = phrase * (MiB // len(phrase))
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            zf.writestr("mimetype", EPUB_MIMETYPE, compress_type=zipfile.ZIP_STORED)
            zf.writestr("META-INF/container.xml", CONTAINER_XML)
            zf.writestr("OEBPS/content.opf", CONTENT_OPF)
            zf.writestr(
                "OEBPS/chapter1.xhtml",
                XHTML_HEAD % b"One" + b"<h1>One</h1><p>A short first chapter.</p>" + XHTML_TAIL,
            )
            with zf.open("OEBPS/chapter2.xhtml", "w", force_zip64=True) as entry:
                entry.write(XHTML_HEAD % b"Two" + b"<p>")
                written = 0
                while written < expanded_bytes:
                    piece = chunk[: expanded_bytes - written]
                    entry.write(piece)
                    written += len(piece)
                entry.write(b"</p>" + XHTML_TAIL)
        partial.rename(path)
    return path.read_bytes()


def giant_paragraph(chars: int) -> bytes:
    """`chars` characters of words: no blank line, no sentence end."""
    words = "river stone lantern quiet harbor window silver morning garden letter".split()
    text = " ".join(random.Random(chars).choices(words, k=chars // 5))[:chars]
    text = text.rstrip() + "x" * (chars - len(text.rstrip()))
    return text.encode()


def multipart(file: bytes, filename: str, content_type: str) -> tuple[str, bytes]:
    boundary = "hostilebenchboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nfake-tts\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
        f"\r\nContent-Type: {content_type}\r\n\r\n"
    ).encode()
    return (
        f"multipart/form-data; boundary={boundary}",
        body + file + f"\r\n--{boundary}--\r\n".encode(),
    )


def pieces(data: bytes) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), MB):
        yield view[start : start + MB]


_FILLER = b"a" * MB


def big_json() -> Iterator[bytes | memoryview]:
    """DECLARED_BYTES of a JSON body: a speech request whose `input` never seems to end."""
    prefix = b'{"model": "fake-tts", "voice": "alloy", "input": "'
    suffix = b'"}'
    yield prefix
    left = DECLARED_BYTES - len(prefix) - len(suffix)
    while left > 0:
        piece = memoryview(_FILLER)[: min(MB, left)]
        yield piece
        left -= len(piece)
    yield suffix


def chunked(body: Iterable[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    for piece in body:
        yield b"%x\r\n" % len(piece)
        yield piece
        yield b"\r\n"
    yield b"0\r\n\r\n"


@dataclass(frozen=True)
class Kind:
    name: str
    path: str
    expected: str
    keyed: bool
    content_type: str
    body: Callable[[], Iterable[bytes | memoryview]]
    length: int | None  # None: chunked


def corpus() -> list[Kind]:
    bomb_type, bomb = multipart(epub_bomb(), "book.epub", "application/epub+zip")
    texts = [multipart(giant_paragraph(n), "book.txt", "text/plain") for n in PARAGRAPH_CHARS]
    deep = b"[" * DEPTH + b"]" * DEPTH
    json_type = "application/json"
    return [
        Kind(
            "json 300MB no key",
            "/v1/jobs/speech",
            "401",
            False,
            json_type,
            big_json,
            DECLARED_BYTES,
        ),
        Kind("json 300MB key", "/v1/jobs/speech", "413", True, json_type, big_json, DECLARED_BYTES),
        Kind(
            "json chunked key",
            "/v1/jobs/speech",
            "413",
            True,
            json_type,
            lambda: chunked(big_json()),
            None,
        ),
        Kind(
            "epub zip bomb",
            "/v1/audiobooks/quote",
            "413",
            True,
            bomb_type,
            lambda: pieces(bomb),
            len(bomb),
        ),
        *(
            Kind(
                f"txt {n // MB}M paragraph",
                "/v1/audiobooks/quote",
                expected,
                True,
                text_type,
                lambda body=body: pieces(body),
                len(body),
            )
            for n, expected, (text_type, body) in zip(
                PARAGRAPH_CHARS, ("200/400, fast", "400"), texts, strict=True
            )
        ),
        Kind(
            "deep json speech", "/v1/jobs/speech", "400", True, json_type, lambda: [deep], len(deep)
        ),
        Kind(
            "deep json audiobook",
            "/v1/audiobooks",
            "400",
            True,
            json_type,
            lambda: [deep],
            len(deep),
        ),
    ]


# --- one hostile request over a raw socket ---------------------------------------------

_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


def _answer(raw: bytes) -> tuple[str, bool]:
    """(label, complete) of what the server sent so far: "413 request_too_large"."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return "partial answer", False
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return "garbled answer", True
    length = _LENGTH.search(head)
    if length is not None and len(body) < int(length[1]):
        return str(status), False
    code = ""
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        code = json.loads(body)["error"]["code"] or ""
    return f"{status} {code}".strip(), True


@dataclass
class Outcome:
    label: str
    wall_s: float
    sent_bytes: int
    t0: float
    t1: float
    cpu_s: float = 0.0  # gross: everything the API did in [t0, t1]
    lower_bound: bool = False  # the API was killed before the request ended
    rss_base: int = 0  # the API's RSS before the attack (or after its restart)
    rss_start: int = 0  # ... when this request started
    rss_peak: int = 0
    net_cpu_s: float = 0.0


def send(
    port: int,
    head: bytes,
    body: Iterable[bytes | memoryview],
    deadline: float,
    abort: Callable[[], bool],
) -> tuple[str, int]:
    """Send `head` then `body` until the server answers, closes or `deadline`; read the
    answer. Returns (label, bytes of the body sent)."""
    sent = 0
    received = b""
    body_iter = iter(body)
    pending = memoryview(head)
    sending = True
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError as exc:
        return f"connect failed ({exc.__class__.__name__})", 0
    with sock:
        sock.setblocking(False)
        while True:
            if time.monotonic() > deadline:
                return ("no answer" if not received else "answer cut"), sent
            if abort():
                return "RSS guard", sent
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], 0.1)
            if readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = None
                sending = False  # the server has answered (or gave up): stop at once
                if data:
                    received += data
                    label, complete = _answer(received)
                    if complete:
                        return label, sent
                    continue
                label, _ = _answer(received)
                if received:
                    return label, sent
                return ("reset" if data is None else "closed, no answer"), sent
            if writable:
                if not pending:
                    nxt = next(body_iter, None)
                    if nxt is None:
                        sending = False
                        continue
                    pending = memoryview(nxt)
                try:
                    n = sock.send(pending)
                except BlockingIOError:
                    continue
                except OSError:
                    sending = False  # the server closed its side; read what it said
                    continue
                if pending.obj is not head:
                    sent += n
                pending = pending[n:]


# --- the API under attack: its pid and URL, restarted if a guard fires --------------------


class Target:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.url = stack.api_url
        self.pid = stack.procs.pid("api")
        self.port = int(self.url.rsplit(":", 1)[1])
        self.rss_base = rss_bytes(self.pid)
        self.restarts: list[str] = []

    def restart(self, why: str) -> None:
        """Kill the API (its process group, which this script started) and start it again."""
        self.restarts.append(why)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.stack.procs.stop("api")
        url = self.stack.start_api()
        for _ in range(20):  # warm it a little before its RSS becomes the reference
            httpx.post(f"{url}/v1/jobs/speech", json=SPEECH_BODY, headers=self.stack.headers)
        self.pid = self.stack.procs.pid("api")
        self.port = int(url.rsplit(":", 1)[1])
        self.rss_base = rss_bytes(self.pid)
        self.url = url

    def alive(self) -> bool:
        return self.stack.procs.children["api"].poll() is None


@dataclass
class Attack:
    target: Target
    kinds: list[Kind]
    count: int
    timeout_s: float
    rss_guard_bytes: int
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)
    t_start: float = 0.0
    t_end: float = 0.0
    error: BaseException | None = None
    quit: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        self.t_start = time.time()
        try:
            for kind in self.kinds:
                results = self.outcomes.setdefault(kind.name, [])
                for _ in range(self.count):
                    if self.quit.is_set():
                        return
                    outcome = self.one(kind)
                    results.append(outcome)
                    if outcome.lower_bound or outcome.wall_s > SLOW_S:
                        why = outcome.label if outcome.lower_bound else f"over {SLOW_S:.0f} s"
                        self.stopped[kind.name] = f"stopped after {len(results)}: {why}"
                        break
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self.t_end = time.time()

    def one(self, kind: Kind) -> Outcome:
        target = self.target
        pid, base = target.pid, target.rss_base
        head = f"POST {kind.path} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\n"
        if kind.keyed:
            head += f"Authorization: Bearer {target.stack.master_key}\r\n"
        head += f"Content-Type: {kind.content_type}\r\n"
        if kind.length is None:
            head += "Transfer-Encoding: chunked\r\n"
        else:
            head += f"Content-Length: {kind.length}\r\n"
        rss_start = rss_bytes(pid)
        sampler = RssSampler(pid)
        sampler.start()
        cpu0, t0, started = proc_cpu_s(pid), time.time(), time.monotonic()
        try:
            label, sent = send(
                target.port,
                (head + "\r\n").encode(),
                kind.body(),
                started + self.timeout_s,
                lambda: sampler.peak - base > self.rss_guard_bytes,
            )
        finally:
            sampler.stop.set()
            sampler.join()
        wall = time.monotonic() - started
        outcome = Outcome(
            label,
            wall,
            sent,
            t0,
            time.time(),
            rss_base=base,
            rss_start=rss_start,
            rss_peak=sampler.peak,
        )
        if not target.alive():
            outcome.label += ", API died"
            outcome.lower_bound = True
            target.restart(f"{kind.name}: the API died")
            return outcome
        outcome.cpu_s = proc_cpu_s(pid) - cpu0
        if label in ("no answer", "answer cut", "RSS guard"):
            outcome.label += f" ({self.timeout_s:.0f} s)" if label != "RSS guard" else ""
            outcome.lower_bound = True
            target.restart(f"{kind.name}: {outcome.label}")
        return outcome


# --- normal submits ---------------------------------------------------------------------


def normal_load(target: Target, requests: int, timeout_s: float) -> LoadResult:
    try:
        return run_load(
            "submit",
            f"{target.url}/v1/jobs/speech",
            method="POST",
            body=SPEECH_BODY,
            headers=target.stack.headers,
            expect=202,
            clients=NORMAL_CLIENTS,
            requests=requests,
            keep_header="content-type",  # for the send and answer times of each submit
            timeout_s=timeout_s,
            client="raw",
        )
    except TimeoutError:
        lost = LoadResult("submit")
        lost.errors = requests
        return lost


def fmt_cpu(values: list[float], bounded: bool) -> tuple[str, str]:
    if not values:
        return "-", "-"
    mark = ">=" if bounded else ""
    return f"{mark}{max(values):.3f}", f"{mark}{sum(values) / len(values):.3f}"


def fmt_ms(value: float) -> str:
    return "-" if value != value else f"{value:.1f}"  # NaN: no submit in the window


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def bench_stack(stack: Stack, kinds: list[Kind], args: argparse.Namespace) -> None:
    url = stack.start_api()
    print(f"\n== {stack.label}: API at {url} (1 uvicorn process, no worker)", flush=True)
    target = Target(stack)
    normal_load(target, WARMUP_REQUESTS, 120)
    cpu0 = proc_cpu_s(target.pid)
    base = normal_load(target, args.baseline, 300)
    cpu_per_submit = (proc_cpu_s(target.pid) - cpu0) / max(1, base.count)
    base_p50, _, base_p99, _ = quantiles_ms(base.latencies_ms)
    print(
        f"baseline: {base.count} submits ({NORMAL_CLIENTS} clients), p50 {base_p50:.1f} ms, "
        f"p99 {base_p99:.1f} ms, {base.rate:.0f}/s, API CPU {1000 * cpu_per_submit:.2f} ms "
        f"per submit; statuses {dict(base.statuses)}",
        flush=True,
    )

    target.rss_base = rss_before = rss_bytes(target.pid)
    attack = Attack(target, kinds, args.count, args.timeout, args.rss_guard_mb * MB)
    thread = threading.Thread(target=attack.run, name="attack", daemon=True)
    during = LoadResult("submit")
    thread.start()
    try:
        submitted = 0
        while thread.is_alive() and submitted < MAX_NORMAL_DURING_ATTACK:
            block = normal_load(target, BLOCK_REQUESTS, args.timeout + 60)
            during.merge(block)
            submitted += BLOCK_REQUESTS
            if not block.count:
                time.sleep(0.2)  # the API is being restarted: wait for its new address
    except BaseException:
        attack.quit.set()
        raise
    thread.join(timeout=args.timeout * 3 + 120)
    if thread.is_alive():
        attack.quit.set()
        thread.join(timeout=60)
    if attack.error is not None:
        raise attack.error

    answers = [end for _, end, _ in during.kept]

    def normal_ms(t0: float, t1: float) -> list[float]:
        """Latencies of the normal submits sent between t0 and t1."""
        return [1000 * (end - start) for start, end, _ in during.kept if t0 <= start <= t1]

    with_ms = normal_ms(attack.t_start, attack.t_end)
    rows = [
        f"{'kind':<22}{'sent':>5}  {'statuses':<34}{'expected':<15}{'wall s':>7}{'MB sent':>8}"
        f"{'CPU s/req max':>15}{'mean':>10}{'RSS +MiB':>9}{'own +MiB':>9}{'normal p99 ms':>14}"
    ]
    worst_cpu, worst_kind, worst_rss, worst_rss_kind = 0.0, "", 0, ""
    for kind in kinds:
        outcomes = attack.outcomes.get(kind.name, [])
        if not outcomes:
            rows.append(f"{kind.name:<22}{0:>5}  (not sent)")
            continue
        for o in outcomes:
            normal = sum(1 for t in answers if o.t0 <= t <= o.t1)
            o.net_cpu_s = max(0.0, o.cpu_s - normal * cpu_per_submit)
        bounded = any(o.lower_bound for o in outcomes)
        cpu_max, cpu_mean = fmt_cpu([o.net_cpu_s for o in outcomes], bounded)
        growth = max(o.rss_peak - o.rss_base for o in outcomes)
        own = max(o.rss_peak - o.rss_start for o in outcomes)
        kind_p99 = quantiles_ms(normal_ms(outcomes[0].t0, outcomes[-1].t1))[2]
        statuses = ", ".join(f"{k} x{v}" for k, v in Counter(o.label for o in outcomes).items())
        rows.append(
            f"{kind.name:<22}{len(outcomes):>5}  {statuses:<34}{kind.expected:<15}"
            f"{max(o.wall_s for o in outcomes):>7.2f}"
            f"{max(o.sent_bytes for o in outcomes) / MB:>8.1f}{cpu_max:>15}{cpu_mean:>10}"
            f"{growth / MiB:>9.1f}{own / MiB:>9.1f}{fmt_ms(kind_p99):>14}"
        )
        if kind.name in attack.stopped:
            rows.append(f"{'':<22}  ({attack.stopped[kind.name]})")
        top = max(o.net_cpu_s for o in outcomes)
        if top >= worst_cpu:
            worst_cpu, worst_kind = top, kind.name + (" (>=)" if bounded else "")
        if growth >= worst_rss:
            worst_rss, worst_rss_kind = growth, kind.name
    print(
        f"attack: {attack.t_end - attack.t_start:.1f} s, one hostile request at a time. wall s, "
        "MB sent (body bytes the socket took before the answer): max per request. CPU: the "
        "API's and its children's utime+stime over the request, less the normal submits "
        "answered meanwhile at "
        "their baseline cost. RSS +MiB: peak during the kind over the RSS before the attack "
        "(what earlier kinds left included); own +MiB: over the RSS at the request's start. "
        "normal p99: the submits sent while that kind ran"
    )
    print("\n".join(rows))
    if target.restarts:
        print(f"API restarted {len(target.restarts)} time(s): {'; '.join(target.restarts)}")
    with_p50, _, with_p99, _ = quantiles_ms(with_ms)
    ratio = with_p99 / base_p99 if base_p99 else float("nan")
    print(
        f"normal submits during the attack: {len(with_ms)} answered 202, {during.errors} "
        f"failed (connection errors while the API restarted included), statuses "
        f"{dict(during.statuses)}; p50 {with_p50:.1f} ms"
    )
    print(
        f"API RSS before the attack {rss_before / MiB:.1f} MiB, after it "
        f"{rss_bytes(target.pid) / MiB:.1f} MiB"
        + (" (restarted meanwhile)" if target.restarts else "")
    )
    print(
        "book processes (the API's children that read and plan books): peak RSS "
        f"{children_peak_rss(target.pid) / MiB:.1f} MiB; their CPU is counted above"
    )
    print(
        f"[{stack.label}] RSS growth {worst_rss / MiB:.1f} MiB ({worst_rss_kind}) vs aim "
        f"<= 50 MB: "
        f"{verdict(worst_rss <= AIM_RSS_BYTES)}; worst CPU {worst_cpu:.3f} s/request "
        f"({worst_kind}) vs aim <= {AIM_CPU_S:.0f} s: {verdict(worst_cpu <= AIM_CPU_S)}; "
        f"normal p99 {base_p99:.1f} ms without, {with_p99:.1f} ms with the attack, ratio "
        f"{ratio:.2f} vs aim <= {AIM_P99_RATIO:.0f}x: {verdict(ratio <= AIM_P99_RATIO)}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5, help="requests per hostile kind (5)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per hostile request (30)"
    )
    parser.add_argument("--baseline", type=int, default=500, help="baseline submits (500)")
    parser.add_argument(
        "--rss-guard-mb",
        type=int,
        default=3000,
        help="kill and restart the API when its RSS grows past this during a request (3000)",
    )
    parser.add_argument("--no-production", action="store_true", help="embedded default only")
    parser.add_argument("--redis-db", type=int, default=REDIS_DB, help="Redis db (11)")
    args = parser.parse_args(argv)
    if args.redis_db == 0:
        parser.error("--redis-db 0 is not flushed by this benchmark; pick another")

    started = time.monotonic()
    print(f"hostile input: {args.count} of each kind; {describe_run()}", flush=True)
    kinds = corpus()
    print(
        f"corpus ready in {time.monotonic() - started:.1f} s (zip bomb "
        f"{len(epub_bomb()) / MB:.2f} MB, inflating to {BOMB_EXPANDED_BYTES / MiB:.0f} MiB)",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="speechq-bench-cfg-") as cfg_dir:
        # The model must exist for submits and quotes; nothing calls its provider.
        config = fake_tts_config(Path(cfg_dir) / "config.yaml", free_port())
        with Stack(embedded=True, config_path=config, label="embedded") as stack:
            bench_stack(stack, kinds, args)
        if not args.no_production:
            with Stack(redis_db=args.redis_db, config_path=config, label="production") as stack:
                bench_stack(stack, kinds, args)
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    run_main(main)
