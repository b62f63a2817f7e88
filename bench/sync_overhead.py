"""Sync overhead: POST /v1/audio/speech through speechq against the provider called directly.

`POST /v1/audio/speech` (the OpenAI-compatible synchronous endpoint) submits a job and
waits for it: API, PostgreSQL, Redis (broker and the job-ended notice), the Celery worker,
the router, the provider call, the object store, and the audio read back. The baseline is
the same request (same body, same client) sent straight to the provider. The difference is
what speechq adds to one synchronous speech request.

In one run, on one stack that it starts and removes afterwards:

- production shape: a fresh PostgreSQL database, a Redis db (flushed before and after),
  `speechq api` (1 uvicorn process) and `speechq worker --concurrency 2`; storage a local
  folder (default) or S3 served by a moto subprocess (`--storage s3`);
- the zero-latency fake OpenAI-compatible TTS server of `_stack.py` (keep-alive,
  TCP_NODELAY; 0.2 s of pre-encoded mp3 silence), configured as `openai/tts-1`;
- requests carry an ordinary API key created through `POST /v1/keys` (no budget, no rpm
  limit), as a client's would: its lookup at every request and the worker's budget check
  are part of the cost. `--key master` uses the master key instead (no key lookup).

For each concurrency level (`--concurrency`, default 1 and 4 closed-loop clients): a
warm-up of both, then `--requests` (300) requests to each in `--blocks` (4) alternating
blocks (direct, speechq, speechq, direct, ...), so that the noise of a shared 2-core
machine falls on both alike. Prints p50/p95/p99/max of both and the overhead (speechq
minus direct) at p50 and p99, against the targets (p50 <= 15 ms, p99 <= 45 ms); then
where the time goes, from each job's own timestamps (read from the jobs table after the
run, microseconds, same clock as the client): client send -> `created_at` (API, before
the INSERT) -> `started_at` (worker claim) -> `finished_at` (worker, before its commit)
-> answer received; with one client also the worker's "received" log line; and the API's
own latency histogram for the route (`/metrics`). Prints figures, asserts nothing.

    .venv/bin/python bench/sync_overhead.py [--requests 300] [--concurrency 1,4] [--storage file]
                                           [--client httpx|raw] [--key tenant|master]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from _stack import (  # noqa: E402
    SPEECH_BODY,
    CpuMeter,
    LoadResult,
    Procs,
    Stack,
    describe_run,
    quantiles_ms,
    run_load,
    run_main,
    server_histogram,
    server_view,
    start_fake_tts_stack,
    summarize,
)

TARGET_P50_MS = 15.0
TARGET_P99_MS = 45.0
WARM_UP = 30
ROUTE = "/v1/audio/speech"
JOB_HEADER = "x-speechq-job-id"
HIST_BOUNDS = ("0.01", "0.025", "0.05", "0.1")
# Celery's worker log: "[2026-11-25 13:50:01,123: INFO/MainProcess] Task name[id] received"
_RECEIVED = re.compile(
    r"^\[(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] "
    r"Task speechq\.run_speech_job\[[^\]]+\] received"
)


# --- where the time goes ----------------------------------------------------------------


def _ts(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def worker_received(log_path: Path) -> list[float]:
    """Wall-clock times of the worker's "Task ... received" lines (local time, 1 ms)."""
    if not log_path.exists():
        return []
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        m = _RECEIVED.match(line)
        if m:
            out.append(datetime.strptime(m["ts"], "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out


def phases(
    result: LoadResult, db: psycopg.Connection[Any], received: Sequence[float] | None
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Per-request phase durations in ms, from the jobs' timestamps; and job statuses."""
    ids = [job_id for _, _, job_id in result.kept]
    rows = db.execute(
        "SELECT id, status, created_at, started_at, finished_at FROM jobs WHERE id = ANY(%s)",
        (ids,),
    ).fetchall()
    by_id = {row[0]: row[1:] for row in rows}
    statuses: dict[str, int] = {}
    out: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        out.setdefault(name, []).append(1000 * seconds)

    recv = sorted(received or [])
    for sent, answered, job_id in result.kept:
        row = by_id.get(job_id)
        status = row[0] if row else "missing"
        statuses[status] = statuses.get(status, 0) + 1
        if row is None or row[2] is None or row[3] is None:
            continue
        created, started, finished = _ts(row[1]), _ts(row[2]), _ts(row[3])
        add("send -> created_at (HTTP, auth, validation, before INSERT)", created - sent)
        if received is not None:
            # One client: exactly one "received" line falls inside each request.
            inside = [t for t in recv if sent <= t <= answered]
            if len(inside) == 1:
                add(
                    "  created_at -> worker received (INSERT, COMMIT, LPUSH, BRPOP)",
                    inside[0] - created,
                )
                add("  worker received -> started_at (to the child, claim)", started - inside[0])
        add("created_at -> started_at (commit, publish, Celery, claim)", started - created)
        add(
            "started_at -> finished_at (the job: router, provider, probe, store)",
            finished - started,
        )
        add("finished_at -> answer (commit, notice, reads, audio back)", answered - finished)
    return out, statuses


def phase_table(durations: dict[str, list[float]]) -> str:
    rows = [f"    {'phase':<72}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'mean':>8}{'n':>6}"]
    for name, values in durations.items():
        p50, p95, p99, _ = quantiles_ms(values)
        mean = statistics.fmean(values) if values else float("nan")
        rows.append(f"    {name:<72}{p50:>8.2f}{p95:>8.2f}{p99:>8.2f}{mean:>8.2f}{len(values):>6}")
    return "\n".join(rows)


# --- the benchmark ----------------------------------------------------------------------


def measure_level(
    stack: Stack,
    provider_url: str,
    clients: int,
    headers: dict[str, str],
    args: argparse.Namespace,
    db: psycopg.Connection[Any],
    procs: tuple[Procs, ...],
) -> tuple[float, float]:
    """Both targets at `clients` concurrent clients; returns the overhead at p50 and p99."""
    common: dict[str, Any] = {
        "method": "POST",
        "body": SPEECH_BODY,
        "clients": clients,
        "client": args.client,
        "timeout_s": args.timeout,
    }
    direct_url, direct_headers = (
        f"{provider_url}/v1/audio/speech",
        {"Authorization": "Bearer sk-bench"},
    )
    sq_url = f"{stack.api_url}{ROUTE}"

    def direct_block(n: int) -> LoadResult:
        return run_load("d", direct_url, headers=direct_headers, requests=n, **common)

    def speechq_block(n: int) -> LoadResult:
        return run_load("s", sq_url, headers=headers, requests=n, keep_header=JOB_HEADER, **common)

    # Warm-up: connections, pools, worker processes, the provider's keep-alive connection.
    direct_block(WARM_UP)
    speechq_block(WARM_UP)
    direct = LoadResult("direct to provider")
    speechq = LoadResult("through speechq")
    direct_cpu, speechq_cpu = CpuMeter(*procs), CpuMeter(*procs)
    blocks = max(1, args.blocks)
    per_block = [args.requests // blocks + (i < args.requests % blocks) for i in range(blocks)]
    hist_before = server_histogram(stack.api_url, ROUTE)
    for index, n in enumerate(per_block):
        order = ("direct", "speechq") if index % 2 == 0 else ("speechq", "direct")
        for which in order:
            if which == "direct":
                with direct_cpu.measure():
                    direct.merge(direct_block(n))
            else:
                with speechq_cpu.measure():
                    speechq.merge(speechq_block(n))
    hist_after = server_histogram(stack.api_url, ROUTE)

    print(f"\n== {clients} client{'s' if clients > 1 else ''}, {args.requests} requests each")
    print(summarize([direct, speechq]))
    d50, d95, d99, _ = quantiles_ms(direct.latencies_ms)
    s50, s95, s99, _ = quantiles_ms(speechq.latencies_ms)
    o50, o99 = s50 - d50, s99 - d99
    met50 = "met" if o50 <= TARGET_P50_MS else "MISSED"
    met99 = "met" if o99 <= TARGET_P99_MS else "MISSED"
    print(
        f"overhead (speechq - direct): p50 {o50:.1f} ms (target {TARGET_P50_MS:.0f}: {met50}), "
        f"p95 {s95 - d95:.1f} ms, p99 {o99:.1f} ms (target {TARGET_P99_MS:.0f}: {met99})",
        flush=True,
    )
    print(server_view(hist_before, hist_after, unit="requests", bounds=HIST_BOUNDS))
    received = worker_received(stack.tmp / "worker.log") if clients == 1 else None
    durations, statuses = phases(speechq, db, received)
    print(f"where the time goes (per job, from its timestamps; job statuses {statuses}):")
    print(phase_table(durations))
    print(f"direct  {direct_cpu.report(direct.count, 'request')}")
    print(f"speechq {speechq_cpu.report(speechq.count, 'request')}")
    if direct.errors or speechq.errors:
        print(f"statuses: direct {direct.statuses}, speechq {speechq.statuses}")
    return o50, o99


def api_key(stack: Stack, kind: str) -> dict[str, str]:
    """Headers for the requests: an ordinary key created through the API, or the master key."""
    if kind == "master":
        return stack.headers
    answer = httpx.post(
        f"{stack.api_url}/v1/keys", json={"name": "bench"}, headers=stack.headers, timeout=30.0
    )
    answer.raise_for_status()
    return {"Authorization": f"Bearer {answer.json()['key']}"}


def check_one(stack: Stack, headers: dict[str, str]) -> str:
    """One request through the API, checked: a sanity check, not timed."""
    from worker.audio import sniff_audio_format

    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=60.0) as client:
        answer = client.post(ROUTE, json=SPEECH_BODY)
        job = client.get(f"/v1/jobs/{answer.headers.get(JOB_HEADER, '-')}").json()
    ok = (
        answer.status_code == 200
        and sniff_audio_format(answer.content[:16]) == "mp3"
        and job.get("status") == "succeeded"
        and len(answer.content) == (job.get("result") or {}).get("bytes")
    )
    stamps = ", ".join(f"{k} {job.get(k)}" for k in ("created_at", "started_at", "finished_at"))
    verdict = "ok" if ok else f"UNEXPECTED: {answer.status_code}, {job.get('status')}"
    return f"{verdict}; the API's timestamps are whole seconds ({stamps})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="per target and level (300)")
    parser.add_argument(
        "--concurrency", default="1,4", help="closed-loop clients, comma-separated (1,4)"
    )
    parser.add_argument("--blocks", type=int, default=4, help="alternating blocks (4)")
    parser.add_argument("--storage", choices=("file", "s3"), default="file", help="(s3: moto)")
    parser.add_argument("--client", choices=("httpx", "raw"), default="httpx")
    parser.add_argument(
        "--key",
        choices=("tenant", "master"),
        default="tenant",
        help="an ordinary key made through POST /v1/keys (default), or the master key",
    )
    parser.add_argument("--loglevel", default="INFO", help="API and worker log level (INFO)")
    parser.add_argument("--redis-db", type=int, default=12, help="Redis db to use (12)")
    parser.add_argument("--timeout", type=float, default=300.0, help="per block (s)")
    args = parser.parse_args(argv)
    if args.redis_db == 0:
        parser.error("--redis-db 0 is not flushed by this benchmark; pick another")
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]

    with contextlib.ExitStack() as cleanup:  # unwinds in reverse: every process stopped
        procs, stack, provider_port = start_fake_tts_stack(
            cleanup,
            storage=args.storage,
            redis_db=args.redis_db,
            loglevel=args.loglevel,
            label="sync",
        )
        db = cleanup.enter_context(psycopg.connect(stack.psycopg_url, autocommit=True))
        headers = api_key(stack, args.key)
        print(
            f"sync overhead: POST {ROUTE} through speechq vs the fake provider directly; "
            f"{args.requests} requests each per level, {args.blocks} alternating blocks, "
            f"client {args.client}, {args.key} key; PostgreSQL + Redis, storage "
            f"{args.storage}, worker concurrency 2, log level {args.loglevel}; {describe_run()}",
            flush=True,
        )
        started = time.monotonic()
        overheads = {}
        for clients in levels:
            overheads[clients] = measure_level(
                stack,
                f"http://127.0.0.1:{provider_port}",
                clients,
                headers,
                args,
                db,
                (procs, stack.procs),
            )
        print(f"\ncheck of one request: {check_one(stack, headers)}")
        print("summary (overhead = speechq - direct):")
        for clients, (o50, o99) in overheads.items():
            met = o50 <= TARGET_P50_MS and o99 <= TARGET_P99_MS
            print(
                f"  {clients} client(s): p50 +{o50:.1f} ms, p99 +{o99:.1f} ms vs targets "
                f"{TARGET_P50_MS:.0f}/{TARGET_P99_MS:.0f} ms: {'met' if met else 'MISSED'}"
            )
        print(f"took {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
