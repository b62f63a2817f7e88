"""Shared helpers of the benchmarks: processes, the speechq stack, CPU accounting, load.

- `Procs`: child processes, each in its own session, stopped as whole process groups.
- `Stack`: speechq on the production shape (PostgreSQL + Redis) or the embedded default,
  as a context manager that removes everything it created (database, Redis db, folder,
  processes).
- `CpuMeter`: CPU time per group of processes (and the rest of the machine: the noise).
- `run_load`: a bounded closed-loop load driver (httpx or a minimal raw HTTP/1.1 client);
  `quantiles_ms`, `summarize`; the API's own latency histogram from `/metrics`.
- The zero-latency fake OpenAI-compatible TTS server (`start_fake_provider`, run as
  `python bench/_stack.py --serve-fake-provider PORT`) and a moto S3 server (`start_s3`).
  With `latency_s` the fake sleeps that long per speech request (a threaded server, so
  concurrent requests overlap), with `tone_seconds` it answers with that much of a tone
  instead of 0.2 s of silence, and `GET /stats` lists every speech request's wall-clock
  start and end (`fake_provider_stats`).

Not a benchmark itself; the scripts next to it import it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psycopg
import redis
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
SPEECH_BODY: dict[str, Any] = {
    "model": "fake-tts",
    "input": "The quick brown fox jumps over the lazy dog.",
    "voice": "alloy",
    "response_format": "mp3",
}

__all__ = [
    "start_fake_tts_stack",
    "PG_ADMIN_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "ROOT",
    "SPEECH_BODY",
    "CpuMeter",
    "LoadResult",
    "Procs",
    "Stack",
    "describe_run",
    "fake_provider_stats",
    "fake_tts_config",
    "free_port",
    "quantiles_ms",
    "run_load",
    "run_main",
    "server_histogram",
    "server_view",
    "serve_fake_provider",
    "start_fake_provider",
    "start_s3",
    "summarize",
    "wait_http_ok",
    "wait_tcp",
]


# --- processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _interrupt_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    # Handled like Ctrl-C: asyncio.run cancels its tasks, `finally` blocks clean up.
    raise KeyboardInterrupt


class Procs:
    """Child processes, each in its own session, stopped as whole process groups."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        # So that `finally` blocks (and so the cleanup) also run on SIGTERM.
        signal.signal(signal.SIGTERM, _interrupt_on_sigterm)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        self.children[name] = subprocess.Popen(
            list(argv),
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def pid(self, name: str) -> int:
        return self.children[name].pid

    def check_alive(self, name: str) -> None:
        child = self.children[name]
        if child.poll() is not None:
            raise RuntimeError(f"{name} exited with {child.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.log_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, name: str) -> None:
        child = self.children.pop(name, None)
        if child is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, sig)  # the group this child leads, nothing else
            try:
                child.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; make sure no forked child of it is left behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            return

    def stop_all(self) -> None:
        for name in list(self.children)[::-1]:
            self.stop(name)


def describe_run() -> str:
    """The code measured (git commit, "-dirty" if changed) and the interpreter."""
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"code {rev or 'unknown'}, Python {sys.version.split()[0]}, {os.cpu_count()} cores"


def wait_http_ok(url: str, procs: Procs, name: str, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs.check_alive(name)
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{name} did not answer {url} within {timeout_s:.0f} s:\n{procs.tail(name)}")


def fake_tts_config(
    path: Path, provider_port: int, *, audiobook_concurrency: int | None = None
) -> Path:
    """One deployment `openai/tts-1` at the fake provider, as model `fake-tts`;
    `audiobook_concurrency` sets that deployment's cap of concurrent audiobook segments."""
    cap = (
        f"      audiobook_concurrency: {audiobook_concurrency}\n"
        if audiobook_concurrency is not None
        else ""
    )
    path.write_text(
        "model_list:\n"
        "  - model_name: fake-tts\n"
        "    litellm_params:\n"
        "      model: openai/tts-1\n"
        f'      api_base: "http://127.0.0.1:{provider_port}/v1"\n'
        "      api_key: sk-bench\n"
        f"{cap}"
        "    model_info: {mode: audio_speech}\n"
    )
    return path


# --- the speechq stack ----------------------------------------------------------------


@dataclass
class Stack:
    """speechq on the production shape (PostgreSQL + Redis) or the embedded default.

    Use as a context manager: everything it creates (database, Redis keys, processes,
    temporary folder) is removed on exit.
    """

    embedded: bool = False
    redis_db: int = 13
    config_path: Path | None = None
    storage_url: str | None = None  # default: a folder in the temporary data dir
    extra_env: dict[str, str] = field(default_factory=dict)
    label: str = ""

    def __post_init__(self) -> None:
        self.master_key = "sq-bench-" + secrets.token_urlsafe(24)
        self._tmp = tempfile.TemporaryDirectory(prefix="speechq-bench-")
        self.tmp = Path(self._tmp.name)
        self.procs = Procs(self.tmp)
        self.db_name = f"speechq_bench_{os.getpid()}_{secrets.token_hex(3)}"
        self.api_url = ""
        self._db_created = False

    @property
    def database_url(self) -> str:
        if self.embedded:
            return f"sqlite:///{self.tmp}/data/speechq.db"
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db_name}"

    @property
    def psycopg_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.db_name}"

    @property
    def broker_url(self) -> str:
        if self.embedded:
            return f"sqla+sqlite:///{self.tmp}/data/broker.db"
        return f"redis://{REDIS_HOST}:{REDIS_PORT}/{self.redis_db}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.master_key}"}

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SPEECHQ_", "AWS_")) and k != "PYTHONPATH"
        }
        env.update(
            SPEECHQ_DATA_DIR=str(self.tmp / "data"),
            SPEECHQ_DATABASE_URL=self.database_url,
            SPEECHQ_BROKER_URL=self.broker_url,
            SPEECHQ_STORAGE_URL=self.storage_url or f"file://{self.tmp}/data/blobs",
            SPEECHQ_MASTER_KEY=self.master_key,
            SPEECHQ_LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
        )
        if self.config_path is not None:
            env["SPEECHQ_CONFIG"] = str(self.config_path)
        env.update(self.extra_env)
        return env

    def __enter__(self) -> Stack:
        try:
            (self.tmp / "data").mkdir()
            if not self.embedded:
                self._flush_redis()
                with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.db_name)))
                self._db_created = True
            migrate = subprocess.run(
                [sys.executable, "-m", "speechq.cli", "migrate"],
                env=self.env(),
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if migrate.returncode:
                raise RuntimeError(f"speechq migrate failed:\n{migrate.stderr[-3000:]}")
        except BaseException:
            self.__exit__()
            raise
        return self

    def start_api(self) -> str:
        port = free_port()
        argv = [sys.executable, "-m", "speechq.cli", "api", "--host", "127.0.0.1"]
        self.procs.start("api", [*argv, "--port", str(port)], self.env())
        self.api_url = f"http://127.0.0.1:{port}"
        wait_http_ok(f"{self.api_url}/healthz", self.procs, "api")
        return self.api_url

    def start_worker(
        self,
        concurrency: int,
        *,
        queues: str | None = None,
        pool: str | None = None,
        name: str = "worker",
        env: dict[str, str] | None = None,
    ) -> None:
        """`speechq worker`; `queues` and `pool` as its options (default: all, prefork);
        `env`: more environment variables for this worker only."""
        argv = [sys.executable, "-m", "speechq.cli", "worker", "--concurrency", str(concurrency)]
        if queues:
            argv += ["--queues", queues]
        if pool:
            argv += ["--pool", pool]
        self.procs.start(name, argv, self.env() | (env or {}))

    def _flush_redis(self) -> None:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=self.redis_db)
        try:
            client.flushdb()
        finally:
            client.close()

    def __exit__(self, *_: object) -> None:
        try:
            self.procs.stop_all()
        finally:
            try:
                if not self.embedded:
                    self._flush_redis()
                if self._db_created:
                    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                        conn.execute(
                            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                                sql.Identifier(self.db_name)
                            )
                        )
                    self._db_created = False
            finally:
                self._tmp.cleanup()


# --- CPU accounting -------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_KNOWN_SERVICES = ("postgres", "redis-server")


def _cpu_by_pid(groups: dict[int, str]) -> dict[int, tuple[str, float]]:
    """CPU seconds so far of every process, with the group it is counted in: the name of a
    process group this benchmark started, "bench" (this process), postgres, redis-server
    or "other" (anything else running on the machine: the noise)."""
    me = os.getpid()
    out: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        pid, pgrp = int(entry), int(fields[2])
        seconds = (int(fields[11]) + int(fields[12])) / _CLK_TCK
        if pgrp in groups:
            group = groups[pgrp]
        elif pid == me:
            group = "bench"
        elif comm in _KNOWN_SERVICES:
            group = comm
        else:
            group = "other"
        out[pid] = (group, seconds)
    return out


def _machine_cpu() -> tuple[float, float]:
    """(all, idle) CPU seconds of the machine so far."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return sum(ticks) / _CLK_TCK, (ticks[3] + ticks[4]) / _CLK_TCK


class CpuMeter:
    """Adds up the CPU time each group of processes spends inside `with meter.measure():`.

    Processes that exit inside the window (a pool's overflow PostgreSQL backend) are
    not counted; everything else on the machine is, "other" being the noise."""

    def __init__(self, *procs: Procs) -> None:
        self.procs = procs
        self.seconds: dict[str, float] = {}
        self.machine_s = 0.0
        self.idle_s = 0.0

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        groups = {child.pid: name for p in self.procs for name, child in p.children.items()}
        before, (all0, idle0) = _cpu_by_pid(groups), _machine_cpu()
        yield
        after, (all1, idle1) = _cpu_by_pid(groups), _machine_cpu()
        self.machine_s += all1 - all0
        self.idle_s += idle1 - idle0
        for pid, (group, seconds) in after.items():
            spent = seconds - before.get(pid, (group, 0.0))[1]
            if spent > 0:
                self.seconds[group] = self.seconds.get(group, 0.0) + spent

    def report(self, units: int, unit: str) -> str:
        busy = 100 * (1 - self.idle_s / self.machine_s) if self.machine_s else float("nan")
        order = sorted(self.seconds.items(), key=lambda kv: -kv[1])
        parts = [f"{name} {1000 * s / max(1, units):.2f}" for name, s in order if s >= 0.005]
        return (
            f"CPU ms per {unit}: {', '.join(parts)}; "
            f"machine busy {busy:.0f}% of {os.cpu_count()} cores"
        )


# --- load -----------------------------------------------------------------------------


@dataclass
class LoadResult:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    wall_s: float = 0.0
    client_cpu_s: float = 0.0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    # With `keep_header`: (wall-clock send time, wall-clock answer time, header value).
    kept: list[tuple[float, float, str]] = field(default_factory=list)

    def merge(self, other: LoadResult) -> None:
        self.latencies_ms += other.latencies_ms
        self.errors += other.errors
        for status, count in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + count
        self.wall_s += other.wall_s
        self.client_cpu_s += other.client_cpu_s
        self.bodies += other.bodies
        self.kept += other.kept

    @property
    def count(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.count / self.wall_s if self.wall_s else 0.0


class _RawConnection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, for `--client raw`.

    It costs the client far less CPU than httpx, which matters on 2 cores shared with
    the server. It handles what the API sends here: Content-Length or chunked bodies.
    """

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self.fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes | None
    ) -> tuple[int, bytes, dict[str, str]]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.fixed}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        raw_head = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            content = await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding") == "chunked":
            chunks: list[bytes] = []
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                chunks.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            await self.reader.readuntil(b"\r\n")
            content = b"".join(chunks)
        else:
            raise ConnectionError("response without a length")
        if fields.get("connection") == "close":
            await self.close()
        return status, content, fields

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def _load(
    name: str,
    url: str,
    *,
    method: str,
    body: dict[str, Any] | None,
    headers: dict[str, str],
    requests: int,
    clients: int,
    expect: int,
    keep_bodies: bool,
    keep_header: str | None,
    timeout_s: float,
    client_kind: str,
) -> LoadResult:
    result = LoadResult(name)
    remaining = requests
    parsed = httpx.URL(url)
    payload = json.dumps(body).encode() if body is not None else None
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        headers=headers, limits=limits, timeout=httpx.Timeout(30.0)
    ) as client:

        async def one_client() -> None:
            nonlocal remaining
            raw = _RawConnection(parsed.host, parsed.port or 80, headers)
            try:
                while remaining > 0:
                    remaining -= 1
                    sent_at = time.time() if keep_header else 0.0
                    started = time.perf_counter()
                    try:
                        if client_kind == "raw":
                            status, content, fields = await raw.request(
                                method, parsed.raw_path.decode(), payload
                            )
                        else:
                            response = await client.request(
                                method,
                                url,
                                content=payload,
                                headers={"Content-Type": "application/json"} if payload else None,
                            )
                            status, content = response.status_code, response.content
                            fields = response.headers
                    except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError):
                        result.errors += 1
                        await raw.close()
                        continue
                    elapsed_ms = (time.perf_counter() - started) * 1000
                    result.statuses[status] = result.statuses.get(status, 0) + 1
                    if status != expect:
                        result.errors += 1
                        continue
                    result.latencies_ms.append(elapsed_ms)
                    if keep_bodies:
                        result.bodies.append(json.loads(content))
                    if keep_header:
                        value = fields.get(keep_header.lower(), "")
                        result.kept.append((sent_at, sent_at + elapsed_ms / 1000, value))
            finally:
                await raw.close()

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(one_client() for _ in range(clients))), timeout_s)
        result.wall_s = time.perf_counter() - wall0
        result.client_cpu_s = time.process_time() - cpu0
    return result


def run_load(
    name: str,
    url: str,
    *,
    method: str = "GET",
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    requests: int,
    clients: int = 16,
    expect: int = 200,
    keep_bodies: bool = False,
    keep_header: str | None = None,
    timeout_s: float = 600.0,
    client: str = "httpx",
) -> LoadResult:
    """`requests` requests from `clients` concurrent closed-loop clients; bounded by timeout_s.

    `client`: "httpx" (httpx.AsyncClient) or "raw" (a minimal asyncio HTTP/1.1 client).
    `keep_header`: keep that response header of every answer, with its wall-clock send and
    answer times, in `LoadResult.kept`.
    """
    return asyncio.run(
        _load(
            name,
            url,
            method=method,
            body=body,
            headers=headers or {},
            requests=requests,
            clients=clients,
            expect=expect,
            keep_bodies=keep_bodies,
            keep_header=keep_header,
            timeout_s=timeout_s,
            client_kind=client,
        )
    )


def quantiles_ms(values: Sequence[float]) -> tuple[float, float, float, float]:
    """p50, p95, p99 and max."""
    if len(values) < 2:
        only = values[0] if values else float("nan")
        return only, only, only, only
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98], max(values)


def summarize(results: Sequence[LoadResult]) -> str:
    rows = [
        f"{'endpoint':<24}{'ok':>7}{'errors':>7}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}{'req/s':>9}{'client CPU ms/req':>19}"
    ]
    for r in results:
        p50, p95, p99, top = quantiles_ms(r.latencies_ms)
        cpu_ms = 1000 * r.client_cpu_s / max(1, r.count + r.errors)
        rows.append(
            f"{r.name:<24}{r.count:>7}{r.errors:>7}{p50:>9.1f}{p95:>9.1f}{p99:>9.1f}"
            f"{top:>9.1f}{r.rate:>9.0f}{cpu_ms:>19.2f}"
        )
    return "\n".join(rows)


# --- server-side view: the API's own latency histogram ---------------------------------

_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
_HISTOGRAM = "speechq_http_request_duration_seconds"


def server_histogram(api_url: str, route: str = "/v1/jobs/speech") -> dict[str, float]:
    """Cumulative `POST route` buckets (by `le`), plus `sum` and `count`."""
    out: dict[str, float] = {}
    text = httpx.get(f"{api_url}/metrics", timeout=10.0).text
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or not m["name"].startswith(_HISTOGRAM):
            continue
        labels = dict(_LABEL.findall(m["labels"]))
        if labels.get("method") != "POST" or labels.get("route") != route:
            continue
        suffix = m["name"].removeprefix(_HISTOGRAM)
        if suffix == "_bucket":
            out[labels["le"]] = float(m["value"])
        elif suffix in ("_sum", "_count"):
            out[suffix[1:]] = float(m["value"])
    return out


def server_view(
    before: dict[str, float],
    after: dict[str, float],
    unit: str = "submits",
    bounds: Sequence[str] = ("0.005", "0.01", "0.025", "0.05"),
) -> str:
    count = after.get("count", 0.0) - before.get("count", 0.0)
    if count <= 0:
        return "server side: no histogram samples"
    mean_ms = 1000 * (after.get("sum", 0.0) - before.get("sum", 0.0)) / count
    parts = [f"server side (API's own histogram, {count:.0f} {unit}): mean {mean_ms:.1f} ms"]
    for le in bounds:
        within = after.get(le, 0.0) - before.get(le, 0.0)
        parts.append(f"<= {float(le) * 1000:.0f} ms: {100 * within / count:.1f}%")
    return "; ".join(parts)


# --- fake servers: the TTS provider (`_stack.py --serve-fake-provider PORT`), S3 (moto) ---


def _tone_pcm(seconds: float, rate: int = 24_000) -> bytes:
    """`seconds` of a 440 Hz tone at about -12 dBFS as s16le mono: audible, so that an
    audiobook's silence trimming keeps it and its loudness can be measured."""
    import numpy as np

    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440.0 * t) * 8192).astype("<i2").tobytes()


def serve_fake_provider(port: int, latency_s: float = 0.0, tone_seconds: float = 0.0) -> None:
    """Answer POST /v1/audio/speech after `latency_s` with 0.2 s of silence, or with
    `tone_seconds` of a tone when that is > 0; GET /stats: the speech requests so far."""
    from worker.audio import encode_pcm

    pcm = bytes(2 * 24_000 // 5)  # 0.2 s of s16le mono silence at 24 kHz
    if tone_seconds > 0:
        pcm = _tone_pcm(tone_seconds)
    types = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac"}
    types |= {"flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
    audio = {fmt: encode_pcm(pcm, 24_000, fmt) for fmt in types}
    # (wall-clock start, wall-clock end) of every speech request answered; list.append is
    # atomic, so the handler threads need no lock.
    served: list[tuple[float, float]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real provider
        # Headers and body go out in two writes: without TCP_NODELAY the body would wait
        # for the client's delayed ACK (~40 ms), and the fake would not be zero-latency.
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            started = time.time()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") != "/v1/audio/speech":
                self._answer(404, b'{"error": {"message": "not found"}}', "application/json")
                return
            fmt = str(json.loads(body or b"{}").get("response_format") or "mp3")
            if fmt not in audio:
                self._answer(400, b'{"error": {"message": "bad format"}}', "application/json")
                return
            if latency_s > 0:
                time.sleep(max(0.0, started + latency_s - time.time()))
            self._answer(200, audio[fmt], types[fmt])
            served.append((started, time.time()))

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/stats":
                self._answer(404, b'{"error": {"message": "not found"}}', "application/json")
                return
            self._answer(200, json.dumps({"requests": served}).encode(), "application/json")

        def _answer(self, status: int, content: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *_: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        # A slow fake gets its callers' connections all at once: queue them, don't drop
        # (a dropped SYN is retried after a second). Unchanged for the zero-latency fake.
        request_queue_size = 128 if latency_s > 0 else ThreadingHTTPServer.request_queue_size

    server = Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


def wait_tcp(port: int, procs: Procs, name: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs.check_alive(name)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{name} did not listen on {port} within {timeout_s:.0f} s")


def start_fake_provider(
    procs: Procs,
    name: str = "fake-provider",
    *,
    latency_s: float = 0.0,
    tone_seconds: float = 0.0,
) -> int:
    """The fake TTS server as a subprocess (zero-latency, 0.2 s of silence, unless
    `latency_s` / `tone_seconds` say otherwise); returns its port."""
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-fake-provider", str(port)]
    if latency_s > 0:
        argv += ["--latency", repr(latency_s)]
    if tone_seconds > 0:
        argv += ["--tone-seconds", repr(tone_seconds)]
    procs.start(name, argv, dict(os.environ))
    wait_tcp(port, procs, name)
    return port


def fake_provider_stats(port: int) -> list[tuple[float, float]]:
    """(wall-clock start, end) of every speech request the fake provider answered."""
    response = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=10.0)
    response.raise_for_status()
    return [(float(a), float(b)) for a, b in response.json()["requests"]]


def start_s3(procs: Procs, tmp: Path) -> tuple[str, dict[str, str]]:
    """A moto S3 server subprocess with a bucket; returns its URL and the AWS env."""
    import boto3

    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
    }
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | aws
    procs.start(
        "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env
    )
    url = f"http://127.0.0.1:{port}"
    wait_tcp(port, procs, "moto")
    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    s3.create_bucket(Bucket="speechq-bench")
    return url, aws


def run_main(main: Callable[[], int]) -> None:
    """Run a benchmark's main; on Ctrl-C or SIGTERM, after its cleanup, exit 130."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(description="Run a fake server of the benchmarks.")
    _parser.add_argument("--serve-fake-provider", type=int, metavar="PORT", required=True)
    _parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS")
    _parser.add_argument("--tone-seconds", type=float, default=0.0, metavar="SECONDS")
    _args = _parser.parse_args()
    serve_fake_provider(_args.serve_fake_provider, _args.latency, _args.tone_seconds)


def start_fake_tts_stack(
    cleanup: contextlib.ExitStack,
    *,
    storage: str,
    redis_db: int,
    loglevel: str,
    label: str,
    workers: int = 2,
) -> tuple[Procs, Stack, int]:
    """The production shape against the zero-latency fake TTS provider: a temp folder,
    the fake provider, moto when `storage` is "s3", the API and a worker of `workers`
    processes; everything is stopped when `cleanup` unwinds. Returns the processes, the
    stack and the fake provider's port."""
    tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="speechq-bench-")))
    procs = Procs(tmp)
    cleanup.callback(procs.stop_all)
    provider_port = start_fake_provider(procs)
    extra_env = {"SPEECHQ_LOG_LEVEL": loglevel}
    storage_url = None
    if storage == "s3":
        s3_url, aws = start_s3(procs, tmp)
        storage_url = "s3://speechq-bench/bench"
        extra_env |= aws | {"SPEECHQ_S3_ENDPOINT_URL": s3_url}
    stack = Stack(
        redis_db=redis_db,
        config_path=fake_tts_config(tmp / "config.yaml", provider_port),
        storage_url=storage_url,
        extra_env=extra_env,
        label=label,
    )
    cleanup.enter_context(stack)
    stack.start_api()
    stack.start_worker(workers)
    return procs, stack, provider_port
